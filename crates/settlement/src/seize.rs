//! The [`SeizeInstruction`] of a seizure the engine decided: which position of which account
//! in which protocol, and how much of it, in the protocol's own terms.
//!
//! The engine reports the part it seized as a position in the portfolio format (its `amount`,
//! or a liquidity position's `liquidity`, is what is seized); this turns it into the message a
//! controller acts on. The ids are those an attestation of the same position gives
//! ([`crate::ExternalPositionAttestation::position_id`]), so the controller finds the position
//! it attested, and the amount is the 18-decimal integer the attestations use ([`to_wad`]).

use pmargin_core::input::portfolio::ExternalPosition;

use crate::attestation::{lending_position_id, lp_position_id, protocol_id, ExternalKind};
use crate::fixed::to_wad;
use crate::messages::{account_id, SeizeInstruction};
use crate::Error;

impl SeizeInstruction {
    /// The instruction to move `seized` (the part of one of `account`'s positions the engine
    /// seized) to `receiver`, with `liquidation_id`, `params_version`, `nonce` and `deadline`
    /// left 0 for the caller, who numbers the messages, to fill in.
    ///
    /// Refuses a borrow (a liability is never seized) and an amount a `uint256` of 18 decimals
    /// cannot hold (negative, not finite, above about 3.4e20).
    pub fn for_seized(
        account: &str,
        seized: &ExternalPosition,
        receiver: &str,
    ) -> Result<SeizeInstruction, Error> {
        let (position, amount) = match seized {
            ExternalPosition::UniswapV3Lp(lp) => (
                lp_position_id(&lp.token0, &lp.token1, lp.price_lower, lp.price_upper),
                lp.liquidity,
            ),
            ExternalPosition::LendingDeposit(d) => (
                lending_position_id(ExternalKind::LendingDeposit, &d.asset),
                d.amount,
            ),
            ExternalPosition::LendingBorrow(_) => {
                return Err(Error::InvalidField {
                    field: "position",
                    reason: "a borrow is a liability and is never seized".into(),
                })
            }
        };
        Ok(SeizeInstruction {
            account: account_id(account),
            protocol: protocol_id(seized.protocol()),
            position,
            amount: to_wad(amount)?,
            receiver: account_id(receiver),
            liquidation_id: 0,
            params_version: 0,
            nonce: 0,
            deadline: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eip712::keccak256;
    use pmargin_core::input::portfolio::{LendingPosition, LiquidityPosition};

    fn lending(amount: f64) -> LendingPosition {
        LendingPosition {
            protocol: "aave-v3".into(),
            asset: "ETH".into(),
            amount,
        }
    }

    /// The ids are keccak256 of the strings written out by hand here, and the amount the wad
    /// integer of the decimal seized.
    #[test]
    fn a_seized_part_names_its_position_as_the_protocol_does() {
        let deposit = ExternalPosition::LendingDeposit(lending(1.9696969696969697));
        let m = SeizeInstruction::for_seized("a", &deposit, "liquidator").unwrap();
        assert_eq!(m.account, keccak256(b"a"));
        assert_eq!(m.protocol, keccak256(b"aave-v3"));
        assert_eq!(m.position, keccak256(b"lending_deposit:ETH"));
        assert_eq!(m.receiver, keccak256(b"liquidator"));
        assert_eq!(m.amount, 1_969_696_969_696_969_700);
        let lp = ExternalPosition::UniswapV3Lp(LiquidityPosition {
            protocol: "uniswap-v3".into(),
            token0: "ETH".into(),
            token1: "USDC".into(),
            liquidity: 517.25,
            price_lower: 2000.0,
            price_upper: 4500.5,
        });
        let m = SeizeInstruction::for_seized("a", &lp, "liquidator").unwrap();
        assert_eq!(m.protocol, keccak256(b"uniswap-v3"));
        assert_eq!(m.position, keccak256(b"uniswap_v3_lp:ETH:USDC:2000:4500.5"));
        assert_eq!(m.amount, 517_250_000_000_000_000_000);
    }

    #[test]
    fn a_borrow_or_an_amount_out_of_range_is_refused() {
        let borrow = ExternalPosition::LendingBorrow(lending(1.0));
        let err = SeizeInstruction::for_seized("a", &borrow, "liquidator").unwrap_err();
        assert!(err.to_string().contains("never seized"), "{err}");
        for bad in [-1.0, f64::NAN, 1e21] {
            let deposit = ExternalPosition::LendingDeposit(lending(bad));
            assert!(
                SeizeInstruction::for_seized("a", &deposit, "l").is_err(),
                "{bad}"
            );
        }
    }
}
