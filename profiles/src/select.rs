//! Which generations `delete-generations` removes: `old` (all but the current), `3..7`,
//! `+5` (all but the five newest), plain numbers, or `--older-than 30d`.

use std::collections::BTreeSet;

use crate::error::{ProfileError, Result};
use crate::generation::GenerationInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Old,
    /// Inclusive.
    Range(u64, u64),
    KeepNewest(u64),
    Numbers(BTreeSet<u64>),
    /// Seconds.
    OlderThan(i64),
}

fn bad(text: &str, why: &str) -> ProfileError {
    ProfileError::BadSelection {
        text: text.to_owned(),
        why: why.to_owned(),
    }
}

fn number(text: &str, whole: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| bad(whole, "expected a generation number"))
}

/// `30d`, `12h`, `90m`, `45s`.
pub fn parse_age(text: &str) -> Result<i64> {
    let why = "expected an age such as 30d, 12h or 90m";
    let split = text.len().saturating_sub(1);
    let (count, unit) = text.split_at(split);
    let count: i64 = count.parse().map_err(|_| bad(text, why))?;
    let scale = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad(text, why)),
    };
    count
        .checked_mul(scale)
        .ok_or_else(|| bad(text, "too large"))
}

impl Selection {
    /// Parses the arguments of `delete-generations` (exactly one kind of selection).
    pub fn parse(args: &[String], older_than: Option<&str>) -> Result<Self> {
        match (args, older_than) {
            ([], Some(age)) => Ok(Selection::OlderThan(parse_age(age)?)),
            (_, Some(_)) => Err(bad(
                &args.join(" "),
                "give either --older-than or generations, not both",
            )),
            ([], None) => Err(bad(
                "",
                "say which: old, 3..7, +5, numbers, or --older-than 30d",
            )),
            ([one], None) if one == "old" => Ok(Selection::Old),
            ([one], None) if one.starts_with('+') => {
                let keep = number(&one[1..], one)?;
                if keep == 0 {
                    return Err(bad(
                        one,
                        "+N keeps the N newest generations; N must be at least 1",
                    ));
                }
                Ok(Selection::KeepNewest(keep))
            }
            ([one], None) if one.contains("..") => {
                let (from, to) = one.split_once("..").expect("checked above");
                let (from, to) = (number(from, one)?, number(to, one)?);
                if from > to {
                    return Err(bad(one, "the range is empty (the first number is larger)"));
                }
                Ok(Selection::Range(from, to))
            }
            (many, None) => Ok(Selection::Numbers(
                many.iter().map(|n| number(n, n)).collect::<Result<_>>()?,
            )),
        }
    }

    /// The numbers to delete. Selections that name generations (numbers, ranges) include the
    /// current one if they cover it, so deleting it is refused; `old`, `+N` and `--older-than`
    /// never select it.
    pub fn choose(&self, generations: &[GenerationInfo], now: i64) -> BTreeSet<u64> {
        let not_current = generations.iter().filter(|g| !g.current);
        match self {
            Selection::Old => not_current.map(|g| g.number).collect(),
            Selection::Range(from, to) => generations
                .iter()
                .map(|g| g.number)
                .filter(|n| (from..=to).contains(&n))
                .collect(),
            Selection::Numbers(numbers) => numbers.clone(),
            Selection::KeepNewest(keep) => {
                let mut numbers: Vec<u64> = generations.iter().map(|g| g.number).collect();
                numbers.sort_unstable();
                let newest: BTreeSet<u64> =
                    numbers.iter().rev().take(*keep as usize).copied().collect();
                not_current
                    .map(|g| g.number)
                    .filter(|n| !newest.contains(n))
                    .collect()
            }
            Selection::OlderThan(age) => not_current
                .filter(|g| g.created_at < now - age)
                .map(|g| g.number)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn generations(current: u64) -> Vec<GenerationInfo> {
        (1..=8)
            .map(|n| GenerationInfo {
                number: n,
                path: String::new(),
                created_at: n as i64 * 86_400,
                summary: String::new(),
                current: n == current,
            })
            .collect()
    }

    fn chosen(text: &str, older: Option<&str>, current: u64) -> Vec<u64> {
        let selection = Selection::parse(&args(text), older).expect(text);
        selection
            .choose(&generations(current), 10 * 86_400)
            .into_iter()
            .collect()
    }

    #[test]
    fn each_form_selects_what_nix_users_expect() {
        assert_eq!(chosen("old", None, 5), [1, 2, 3, 4, 6, 7, 8]);
        assert_eq!(chosen("3..7", None, 8), [3, 4, 5, 6, 7]);
        assert_eq!(chosen("+3", None, 8), [1, 2, 3, 4, 5]);
        assert_eq!(chosen("+3", None, 2), [1, 3, 4, 5]);
        assert_eq!(chosen("2 4", None, 8), [2, 4]);
        // Created on days 1..8, now is day 10: older than 5 days means days 1..4.
        assert_eq!(chosen("", Some("5d"), 8), [1, 2, 3, 4]);
        assert_eq!(chosen("", Some("5d"), 2), [1, 3, 4]);
        // A range over the current one selects it, so the deletion is refused later.
        assert_eq!(chosen("4..5", None, 5), [4, 5]);
    }

    #[test]
    fn malformed_selections_say_what_is_expected() {
        for (text, older) in [
            ("", None),
            ("7..3", None),
            ("x..3", None),
            ("+0", None),
            ("+x", None),
            ("three", None),
            ("1", Some("5d")),
            ("", Some("5y")),
            ("", Some("d")),
        ] {
            let err = Selection::parse(&args(text), older).expect_err(text);
            assert!(
                matches!(err, ProfileError::BadSelection { .. }),
                "{text}: {err}"
            );
        }
        assert_eq!(parse_age("90m").expect("age"), 5_400);
    }
}
