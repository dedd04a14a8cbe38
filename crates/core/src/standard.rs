//! Standard (isolated) margin (docs/MODEL.md section 7): what the account would post if each
//! position were margined on its own. It is the baseline that shows what portfolio margin
//! saves: `capital_efficiency` = standard IM / portfolio IM.

use crate::book::{Book, BookAccount};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StandardMargin {
    pub initial: f64,
    pub maintenance: f64,
}

pub fn standard_margin(book: &Book, account: &BookAccount) -> StandardMargin {
    let params = &book.params;
    let mut total = StandardMargin {
        initial: 0.0,
        maintenance: 0.0,
    };
    for p in &account.positions {
        let inst = &book.instruments[p.instrument];
        let u = &book.underlyings[p.underlying];
        let size = p.size.abs();
        match &inst.option {
            None => {
                total.initial += size * inst.forward * u.standard_im_rate;
                total.maintenance += size * inst.forward * u.standard_mm_rate;
            }
            Some(o) if p.size < 0.0 => {
                let s = u.spot;
                let otm = match o.side {
                    crate::instrument::OptionKind::Call => (o.strike - s).max(0.0),
                    crate::instrument::OptionKind::Put => (s - o.strike).max(0.0),
                };
                total.initial += size
                    * (params.short_option_im_base * s - otm).max(params.short_option_im_floor * s);
                total.maintenance += size * params.short_option_mm * s;
            }
            Some(_) => {}
        }
    }
    total
}
