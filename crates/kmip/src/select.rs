//! Which key `key_name` means now: of the Active keys with that Name, the one activated most
//! recently; ties (and servers that keep no Activation Date, like PyKMIP, where the Initial
//! Date stands in) go to the greatest Unique Identifier.

use std::cmp::Ordering;

use crate::protocol::KeyAttributes;

/// The key that wraps now, if any candidate is usable.
pub fn newest(candidates: &[KeyAttributes]) -> Option<&KeyAttributes> {
    candidates.iter().max_by(|a, b| compare(a, b))
}

fn compare(a: &KeyAttributes, b: &KeyAttributes) -> Ordering {
    a.activation_date
        .cmp(&b.activation_date)
        .then(a.initial_date.cmp(&b.initial_date))
        .then_with(|| compare_uids(&a.uid, &b.uid))
}

/// Unique Identifiers that are both decimal numbers (PyKMIP, many appliances) compare as
/// numbers, so "10" is after "9"; others (UUIDs) compare as text.
fn compare_uids(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if numeric(a) && numeric(b) {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    } else {
        a.cmp(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str, activated: Option<i64>, initial: Option<i64>) -> KeyAttributes {
        KeyAttributes {
            uid: uid.into(),
            activation_date: activated,
            initial_date: initial,
            ..KeyAttributes::default()
        }
    }

    #[test]
    fn most_recent_activation_wins_over_identifiers_and_initial_dates() {
        let keys = [
            key("b", Some(100), Some(900)),
            key("a", Some(200), Some(10)),
            key("c", Some(150), Some(1000)),
        ];
        assert_eq!(newest(&keys).unwrap().uid, "a");
    }

    #[test]
    fn ties_go_to_the_greatest_identifier_numbers_as_numbers() {
        let keys = [
            key("9", Some(5), None),
            key("10", Some(5), None),
            key("2", Some(5), None),
        ];
        assert_eq!(newest(&keys).unwrap().uid, "10");
        let uuids = [key("6f1c…-b", Some(5), None), key("0a7e…-a", Some(5), None)];
        assert_eq!(newest(&uuids).unwrap().uid, "6f1c…-b");
        assert_eq!(compare_uids("007", "7"), Ordering::Equal);
        assert_eq!(compare_uids("10", "9a"), Ordering::Less);
    }

    #[test]
    fn without_activation_dates_the_initial_date_decides() {
        let keys = [key("3", None, Some(50)), key("1", None, Some(70))];
        assert_eq!(newest(&keys).unwrap().uid, "1");
        // A key with an Activation Date is preferred over one without.
        let mixed = [key("9", None, Some(99)), key("1", Some(1), Some(1))];
        assert_eq!(newest(&mixed).unwrap().uid, "1");
        assert!(newest(&[]).is_none());
    }
}
