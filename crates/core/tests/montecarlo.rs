//! Monte Carlo statistical risk (`statistical.model = "mc"`), end to end through
//! `margin_report`: agreement with the analytic Student-t ES on linear portfolios,
//! reproducibility, thread-count independence, and errors.
//!
//! Expected values are computed here from the history by hand (EWMA recursion, EWMA
//! correlation, stress) and from the Student-t formulas, not read back from the engine.

use pmargin_core::arrays::RiskArrays;
use pmargin_core::input::params::StatisticalModel;
use pmargin_core::montecarlo::{account_es, mc_scenarios};
use pmargin_core::{
    margin_report, Book, Evaluator, History, MarginReport, Market, Params, Portfolio, ReportOptions,
};
use pmargin_stats::montecarlo::{
    expected_shortfall, student_t_es_analytic, student_t_unit_quantile,
};
use serde_json::{json, Value};

const HISTORY: &str = include_str!("../../../data/history.csv");
const BTC: f64 = 60_000.0;
const ETH: f64 = 3_000.0;
const NO_LIQ: ReportOptions = ReportOptions {
    liquidation_prices: false,
};

fn history() -> History {
    History::parse("history.csv", HISTORY).expect("data/history.csv parses")
}

fn params(statistical: Value) -> Params {
    let u = |r: f64| {
        json!({ "price_scan_range": r, "vol_scan_up": r, "vol_scan_down": r,
                "standard_im_rate": 0.1, "standard_mm_rate": 0.05 })
    };
    let v = json!({
        "version": 1,
        "underlyings": { "BTC": u(0.10), "ETH": u(0.12) },
        "statistical": statistical,
    });
    Params::parse("params.json", &v.to_string()).expect("params parse")
}

fn mc(paths: usize, extra: Value) -> Params {
    let mut s = json!({ "model": "mc", "mc_paths": paths });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    params(s)
}

fn market() -> Market {
    let v = json!({
        "as_of": "2026-11-24T08:00:00Z",
        "rate": 0.0,
        "prices": { "BTC": BTC, "ETH": ETH, "USDC": 1.0 },
        "vols": { "BTC": { "default": 0.60 }, "ETH": { "default": 0.70 } }
    });
    Market::parse("market.json", &v.to_string()).expect("market parses")
}

fn portfolio(accounts: Value) -> Portfolio {
    Portfolio::parse(
        "portfolio.json",
        &json!({ "accounts": accounts }).to_string(),
    )
    .expect("portfolio parses")
}

fn perp(underlying: &str, size: f64, entry: f64) -> Value {
    json!({ "instrument": format!("{underlying}-PERPETUAL"), "size": size, "entry_price": entry })
}

fn report(p: &Portfolio, params: &Params, h: &History) -> MarginReport {
    margin_report(p, &market(), params, Some(h), NO_LIQ).expect("margin report")
}

/// The test's own EWMA: daily log returns, seed = mean square of the first min(30, N).
fn returns(h: &History, name: &str) -> Vec<f64> {
    let c = h.column(name).unwrap();
    c.windows(2).map(|w| (w[1] / w[0]).ln()).collect()
}

fn ewma_var(r: &[f64], lambda: f64) -> f64 {
    let n0 = r.len().min(30);
    let mut s2 = r[..n0].iter().map(|x| x * x).sum::<f64>() / n0 as f64;
    for x in r {
        s2 = lambda * s2 + (1.0 - lambda) * x * x;
    }
    s2
}

fn ewma_cov(a: &[f64], b: &[f64], lambda: f64) -> f64 {
    let n0 = a.len().min(30);
    let mut c = a.iter().zip(b).take(n0).map(|(x, y)| x * y).sum::<f64>() / n0 as f64;
    for (x, y) in a.iter().zip(b) {
        c = lambda * c + (1.0 - lambda) * x * y;
    }
    c
}

/// Student-t density with `nu` degrees of freedom.
fn t_pdf(t: f64, nu: f64) -> f64 {
    libm::tgamma((nu + 1.0) / 2.0) / ((nu * std::f64::consts::PI).sqrt() * libm::tgamma(nu / 2.0))
        * (1.0 + t * t / nu).powf(-(nu + 1.0) / 2.0)
}

/// Analytic ES of the exact loss `-F (exp(x) - 1)` of a long position of notional `F`, with
/// `x` a unit-variance Student-t scaled to standard deviation `s`:
/// `F / (1 - alpha) * integral over t <= -t_q of (1 - exp(c t)) f(t) dt`, `c = s sqrt((nu-2)/nu)`.
/// Substituting `t = -t_q / v`, v in (0, 1], and Simpson's rule.
fn exact_long_es(notional: f64, s: f64, alpha: f64, nu: f64) -> f64 {
    let k = ((nu - 2.0) / nu).sqrt();
    let tq = student_t_unit_quantile(alpha, nu).unwrap() / k;
    let c = s * k;
    let g = |v: f64| {
        if v <= 0.0 {
            return 0.0;
        }
        let t = -tq / v;
        (1.0 - (c * t).exp()) * t_pdf(t, nu) * tq / (v * v)
    };
    let n = 20_000;
    let h = 1.0 / n as f64;
    let mut sum = g(0.0) + g(1.0);
    for i in 1..n {
        sum += g(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    notional * sum * h / 3.0 / (1.0 - alpha)
}

#[test]
fn one_btc_perpetual_matches_the_analytic_student_t_es() {
    let h = history();
    let paths = 100_000;
    let params = mc(paths, json!({ "horizon_days": 2, "mc_seed": 7 }));
    let p = portfolio(json!([{ "id": "long", "balances": { "USDC": 100000.0 },
                               "positions": [perp("BTC", 1.0, BTC)] }]));
    let r = report(&p, &params, &h);
    let a = &r.accounts[0];

    // Hand EWMA vol; horizon 2 days.
    let vol = ewma_var(&returns(&h, "BTC"), 0.94).sqrt();
    let s = vol * 2f64.sqrt();
    let (scen, summary) = mc_scenarios(&h, &params.statistical).unwrap();
    assert!((summary.vols_daily[0] - vol).abs() <= 1e-14 * vol);
    assert_eq!(summary.paths, paths);

    // The report's ES is the ES of the exact losses -F (exp(x) - 1) on the simulated sample,
    // with the tail rule of docs/MODEL.md (q = 1000 of 100,000).
    let moves = scen.moves_of("BTC").unwrap();
    let mut exact: Vec<f64> = moves.iter().map(|m| -BTC * m).collect();
    let e = expected_shortfall(&mut exact, 0.99).unwrap();
    assert_eq!(e.tail_count, 1000);
    assert!((a.es - e.es).abs() <= 1e-9 * e.es, "{} vs {}", a.es, e.es);
    assert!((a.var - e.var).abs() <= 1e-9 * e.var);
    assert_eq!(a.statistical_risk, a.es);

    // Against the analytic ES of the same (convex) loss: within 3 standard errors.
    let analytic_exact = exact_long_es(BTC, s, 0.99, 4.0);
    assert!(
        (a.es - analytic_exact).abs() < 3.0 * e.standard_error,
        "mc {} analytic {} se {}",
        a.es,
        analytic_exact,
        e.standard_error
    );
    // And the linearised loss -F x against student_t_es_analytic: within 3 standard errors.
    let mut linear: Vec<f64> = moves.iter().map(|m| -BTC * m.ln_1p()).collect();
    let el = expected_shortfall(&mut linear, 0.99).unwrap();
    let analytic_linear = BTC * student_t_es_analytic(0.99, 4.0, s).unwrap();
    assert!(
        (el.es - analytic_linear).abs() < 3.0 * el.standard_error,
        "mc {} analytic {} se {}",
        el.es,
        analytic_linear,
        el.standard_error
    );
    // exp(x) - 1 > x: the long's exact loss is below its linearised one.
    assert!(analytic_exact < analytic_linear);

    // The standard error API agrees with the report.
    let market = market();
    let book = Book::build(&p, &market, &params).unwrap();
    let arrays = RiskArrays::compute(&book, Some(&scen)).unwrap();
    let ev = Evaluator::new(&book, &arrays);
    let est = account_es(&ev, &book.accounts[0]).unwrap().unwrap();
    assert!((est.es - a.es).abs() <= 1e-12 * a.es);
    assert!((est.standard_error - e.standard_error).abs() <= 1e-9 * e.standard_error);
    assert!(est.standard_error > 0.0 && est.standard_error < 0.03 * est.es);
}

#[test]
fn btc_eth_pair_matches_the_analytic_student_t_es_with_stressed_correlation() {
    let h = history();
    let params = mc(100_000, json!({ "mc_seed": 11 }));
    let (n_btc, n_eth) = (1.0, 10.0);
    let p = portfolio(json!([{ "id": "pair", "balances": { "USDC": 100000.0 },
        "positions": [perp("BTC", n_btc, BTC), perp("ETH", n_eth, ETH)] }]));
    let r = report(&p, &params, &h);
    let a = &r.accounts[0];

    // Hand estimates: EWMA vols and EWMA correlation, stressed with w = 0.3.
    let (rb, re) = (returns(&h, "BTC"), returns(&h, "ETH"));
    let (vb, ve) = (ewma_var(&rb, 0.94), ewma_var(&re, 0.94));
    let rho = ewma_cov(&rb, &re, 0.94) / (vb * ve).sqrt();
    let rho_s = 0.7 * rho + 0.3;
    let (sb, se) = (vb.sqrt(), ve.sqrt());
    let (eb, ee) = (n_btc * BTC, n_eth * ETH);
    let sigma = ((eb * sb).powi(2) + (ee * se).powi(2) + 2.0 * rho_s * eb * sb * ee * se).sqrt();

    let (scen, summary) = mc_scenarios(&h, &params.statistical).unwrap();
    assert_eq!(summary.underlyings, ["BTC", "ETH"]);
    assert!((summary.estimated_correlation[(0, 1)] - rho).abs() < 1e-12);
    assert!((summary.correlation[(0, 1)] - rho_s).abs() < 1e-12);
    assert!(!summary.repair_changed);
    assert_eq!(summary.repair_frobenius_distance, 0.0);
    assert!((summary.vols_daily[1] - se).abs() <= 1e-14 * se);

    let mb = scen.moves_of("BTC").unwrap();
    let me = scen.moves_of("ETH").unwrap();
    // Report ES = ES of the exact losses on the sample.
    let mut exact: Vec<f64> = mb.iter().zip(me).map(|(x, y)| -(eb * x + ee * y)).collect();
    let e = expected_shortfall(&mut exact, 0.99).unwrap();
    assert!((a.es - e.es).abs() <= 1e-9 * e.es, "{} vs {}", a.es, e.es);
    // Linearised losses against the analytic Student-t ES with the stressed portfolio sigma.
    let mut linear: Vec<f64> = mb
        .iter()
        .zip(me)
        .map(|(x, y)| -(eb * x.ln_1p() + ee * y.ln_1p()))
        .collect();
    let el = expected_shortfall(&mut linear, 0.99).unwrap();
    let analytic = student_t_es_analytic(0.99, 4.0, sigma).unwrap();
    assert!(
        (el.es - analytic).abs() < 3.0 * el.standard_error,
        "mc {} analytic {} se {}",
        el.es,
        analytic,
        el.standard_error
    );
    // The exact (convex) ES of the long pair lies below the linear one, by less than the
    // convexity of a 4-sigma tail move: exp(x) - 1 - x <= x^2 (for |x| < 1).
    assert!(a.es < el.es && a.es > el.es * (1.0 - 4.0 * sigma / (eb + ee)));
}

#[test]
fn same_seed_gives_the_same_report_and_another_seed_does_not() {
    let h = history();
    let p = portfolio(json!([{ "id": "a", "balances": { "USDC": 50000.0 },
        "positions": [perp("BTC", 1.0, BTC), perp("ETH", -15.0, ETH)] }]));
    let one = report(&p, &mc(5000, json!({})), &h);
    let two = report(&p, &mc(5000, json!({})), &h);
    assert_eq!(one, two);
    let other = report(&p, &mc(5000, json!({ "mc_seed": 2 })), &h);
    assert_ne!(one.accounts[0].es, other.accounts[0].es);
}

#[test]
fn report_does_not_depend_on_the_thread_count() {
    let h = history();
    let p = portfolio(json!([
        { "id": "options", "balances": { "USDC": 200000.0, "BTC": 0.5 },
          "positions": [
            { "instrument": "BTC-27DEC26-60000-C", "size": -2.0 },
            { "instrument": "BTC-27DEC26-50000-P", "size": 3.0 },
            { "instrument": "ETH-27DEC26-3200-C", "size": -20.0 },
            perp("ETH", 5.0, 2900.0)
          ] },
        { "id": "perp", "balances": { "USDC": 10000.0 }, "positions": [perp("BTC", -0.5, 61000.0)] }
    ]));
    let params = mc(3000, json!({}));
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| report(&p, &params, &h))
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a, b);
    assert!(a.accounts.iter().all(|r| r.es > 0.0));
}

#[test]
fn history_lacking_an_exposed_underlying_names_the_account() {
    let btc_only: String = HISTORY
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0)
        .collect::<Vec<_>>()
        .join("\n");
    let h = History::parse("btc.csv", &btc_only).unwrap();
    let p = portfolio(json!([
        { "id": "fine", "balances": { "USDC": 1000.0 }, "positions": [perp("BTC", 0.1, BTC)] },
        { "id": "eth-trader", "balances": { "USDC": 1000.0 }, "positions": [perp("ETH", 1.0, ETH)] }
    ]));
    let err = margin_report(&p, &market(), &mc(1000, json!({})), Some(&h), NO_LIQ).unwrap_err();
    assert_eq!(err.account.as_deref(), Some("eth-trader"), "{err}");
    assert_eq!(err.file, "btc.csv");
    assert!(err.message.contains("ETH"), "{err}");
}

#[test]
fn bad_monte_carlo_parameters_name_the_field() {
    let base = || json!({ "model": "mc" });
    let cases = [
        (json!({ "mc_paths": 0 }), "statistical.mc_paths"),
        (json!({ "mc_paths": 2_000_000 }), "statistical.mc_paths"),
        (json!({ "mc_dof": 2.0 }), "statistical.mc_dof"),
        (json!({ "mc_dof": -5.0 }), "statistical.mc_dof"),
        (
            json!({ "mc_stress_weight": 1.5 }),
            "statistical.mc_stress_weight",
        ),
        (
            json!({ "mc_stress_weight": -0.1 }),
            "statistical.mc_stress_weight",
        ),
        (json!({ "mc_seed": -1 }), "statistical.mc_seed"),
        (json!({ "model": "garch" }), "statistical.model"),
        (json!({ "mc_pathz": 10 }), "statistical.mc_pathz"),
    ];
    for (edit, path) in cases {
        let mut s = base();
        for (k, v) in edit.as_object().unwrap() {
            s[k] = v.clone();
        }
        let v = json!({ "version": 1, "statistical": s, "underlyings": { "BTC": {
            "price_scan_range": 0.1, "vol_scan_up": 0.1, "vol_scan_down": 0.1,
            "standard_im_rate": 0.1, "standard_mm_rate": 0.05 } } });
        let err = Params::parse("params.json", &v.to_string()).unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert_eq!(err.file, "params.json");
    }
}

#[test]
fn defaults_keep_filtered_historical_simulation() {
    let p = params(json!({}));
    let s = &p.statistical;
    assert_eq!(s.model, StatisticalModel::Fhs);
    assert_eq!(
        (s.mc_paths, s.mc_dof, s.mc_stress_weight, s.mc_seed),
        (10_000, 4.0, 0.3, 1)
    );
    let h = history();
    let port = portfolio(json!([{ "id": "a", "balances": { "USDC": 50000.0 },
        "positions": [perp("BTC", 1.0, BTC), perp("ETH", 4.0, ETH)] }]));
    let fhs = report(&port, &p, &h);
    // Naming the default model, or setting Monte Carlo knobs without choosing it, changes nothing.
    assert_eq!(fhs, report(&port, &params(json!({ "model": "fhs" })), &h));
    assert_eq!(
        fhs,
        report(&port, &params(json!({ "mc_paths": 50, "mc_seed": 9 })), &h)
    );
    let mc = report(&port, &mc(10_000, json!({})), &h);
    assert_ne!(fhs.accounts[0].es, mc.accounts[0].es);
    assert!(mc.accounts[0].es > 0.0);
}
