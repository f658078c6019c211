//! CKA_END_DATE of the key objects polykms needs: the one that wraps (greatest CKA_ID) and the
//! older ones Decrypts used. PKCS#11 leaves dates to the application (tokens do not refuse a
//! key past its end date), so polykms is the one that honours it: a current key past its end
//! date stops being healthy, one within `end_date_warning` of it is a warning, and so is an
//! older key past its end date or gone from the token.
//!
//! Read from the key objects the probe has just listed: no call into the module here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cryptoki::types::Date;
use polykms_backend::{KeyLifecycle, KeyVersion, LifecycleFinding, LifecycleState};

use crate::keys::{self, KeySet};

/// `end_date_warning` when the config leaves it out.
pub(crate) const DEFAULT_END_DATE_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

const DAY: u64 = 24 * 3600;

/// A key object's CKA_END_DATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndDate {
    /// As stored: `YYYYMMDD`.
    pub(crate) text: String,
    /// 00:00 UTC the day after: the end date is the last day the key may be used (CK_DATE
    /// has no time of day nor zone).
    pub(crate) expires: SystemTime,
}

impl EndDate {
    /// The end date a CK_DATE holds; `None` when it is empty (no end date) or not a date.
    pub(crate) fn of(date: &Date) -> Option<EndDate> {
        if date.is_empty() {
            return None;
        }
        let year = digits(&date.year)?;
        let (month, day) = (digits(&date.month)?, digits(&date.day)?);
        if !(1..=12).contains(&month) || !(1..=31).contains(&day) || year < 1970 {
            return None;
        }
        let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
        Some(EndDate {
            text: format!("{year:04}{month:02}{day:02}"),
            expires: UNIX_EPOCH + Duration::from_secs((days + 1) * DAY),
        })
    }
}

/// ASCII decimal digits as a number.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + i64::from(b - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What the end dates of `set` say at `now`, for the current key and the `in_use` versions.
pub(crate) fn findings(
    set: &KeySet,
    in_use: &[KeyVersion],
    now: SystemTime,
    warning: Duration,
) -> KeyLifecycle {
    let mut out = Vec::new();
    let current = set.keys.last();
    if let Some(key) = current
        && let Some(end) = &key.end_date
    {
        let remedy = format!(
            "extend CKA_END_DATE ({}) of the key object, or make a new key object labelled {:?} \
             with a greater CKA_ID",
            end.text, set.label
        );
        if end.expires <= now {
            out.push(
                LifecycleFinding::new(LifecycleState::Expired, key.version.as_str(), remedy)
                    .blocking()
                    .at(end.expires),
            );
        } else if end.expires <= now + warning {
            out.push(
                LifecycleFinding::new(LifecycleState::Expiring, key.version.as_str(), remedy)
                    .at(end.expires),
            );
        }
    }
    let mut seen = Vec::new();
    for version in in_use {
        // Versions of another key_label (before a reload changed it) are not this set's.
        let Ok(id) = keys::id_of(&set.label, version) else {
            continue;
        };
        if current.is_some_and(|c| c.id == id) || seen.contains(&id) {
            continue;
        }
        let Some(key) = set.with_id(&id) else {
            out.push(LifecycleFinding::new(
                LifecycleState::VersionRetired,
                version.as_str(),
                "its key object is no longer on the token: restore it from a backup of the \
                 token, or the Secrets it wrapped cannot be decrypted",
            ));
            seen.push(id);
            continue;
        };
        seen.push(id);
        if let Some(end) = &key.end_date
            && end.expires <= now
        {
            out.push(
                LifecycleFinding::new(
                    LifecycleState::Expired,
                    version.as_str(),
                    format!(
                        "extend CKA_END_DATE ({}) of the key object, or re-encrypt the Secrets \
                         it wrapped under the current key (polykms reencrypt)",
                        end.text
                    ),
                )
                .at(end.expires),
            );
        }
    }
    KeyLifecycle::of(out)
}

#[cfg(test)]
mod tests {
    use cryptoki::object::ObjectHandle;

    use super::*;
    use crate::keys::{KeyObject, version_of};

    fn date(text: &str) -> Date {
        Date::new_from_str_slice(&text[..4], &text[4..6], &text[6..]).unwrap()
    }

    fn at(text: &str) -> SystemTime {
        EndDate::of(&date(text)).unwrap().expires
    }

    #[test]
    fn an_end_date_is_the_last_day_a_key_may_be_used() {
        let d = EndDate::of(&date("20270115")).unwrap();
        assert_eq!(d.text, "20270115");
        assert_eq!(
            humantime::format_rfc3339(d.expires).to_string(),
            "2027-01-16T00:00:00Z"
        );
        assert_eq!(
            humantime::format_rfc3339(at("20241231")).to_string(),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            humantime::format_rfc3339(at("20240229")).to_string(),
            "2024-03-01T00:00:00Z"
        );
        // Empty (no end date) and malformed dates say nothing.
        assert_eq!(EndDate::of(&Date::new_empty()), None);
        for bad in ["2027 115", "20271301", "20270100", "19691231"] {
            assert_eq!(EndDate::of(&date(bad)), None, "{bad}");
        }
    }

    fn set(keys: &[(u8, Option<&str>)]) -> KeySet {
        KeySet {
            generation: 1,
            label: "kek".into(),
            keys: keys
                .iter()
                .map(|(id, end)| KeyObject {
                    id: vec![*id],
                    version: version_of("kek", &[*id]),
                    // SAFETY: a made-up handle, never passed to a module: these tests read
                    // end dates only.
                    handle: unsafe { ObjectHandle::new_from_raw((*id).into()) },
                    unusable: None,
                    exposure: None,
                    end_date: end.and_then(|e| EndDate::of(&date(e))),
                })
                .collect(),
        }
    }

    const WINDOW: Duration = Duration::from_secs(30 * DAY);

    #[test]
    fn a_current_key_past_its_end_date_blocks_wraps_and_one_near_it_warns() {
        let now = at("20270110");
        let past = findings(&set(&[(1, Some("20270109"))]), &[], now, WINDOW);
        let f = past.blocking().expect("past its end date");
        assert_eq!(f.state, LifecycleState::Expired);
        assert_eq!(f.at, Some(at("20270109")));
        assert!(
            f.remedy.contains("extend CKA_END_DATE (20270109)")
                && f.remedy.contains("labelled \"kek\" with a greater CKA_ID"),
            "{f}"
        );
        let near = findings(&set(&[(1, Some("20270201"))]), &[], now, WINDOW);
        assert_eq!(near.blocking(), None);
        assert_eq!(near.findings[0].state, LifecycleState::Expiring);
        assert_eq!(near.findings[0].at, Some(at("20270201")));
        // Beyond the window, or no end date: nothing to say.
        for end in [Some("20270301"), None] {
            let l = findings(&set(&[(1, end)]), &[], now, WINDOW);
            assert!(l.findings.is_empty(), "{end:?}: {l:?}");
        }
    }

    #[test]
    fn older_keys_in_use_past_their_end_date_or_deleted_are_warnings() {
        let now = at("20270110");
        let s = set(&[(1, Some("20260101")), (2, Some("20270201")), (3, None)]);
        let in_use = [
            version_of("kek", &[1]),
            version_of("kek", &[2]),
            version_of("kek", &[3]),
            version_of("kek", &[9]),
            version_of("other-label", &[1]),
            version_of("kek", &[1]),
        ];
        let l = findings(&s, &in_use, now, WINDOW);
        assert_eq!(l.blocking(), None);
        let seen: Vec<_> = l
            .findings
            .iter()
            .map(|f| (f.key.as_str(), f.state))
            .collect();
        // Older key 02 near its end date is not reported: only the current key's is.
        assert_eq!(
            seen,
            [
                ("kek:01", LifecycleState::Expired),
                ("kek:09", LifecycleState::VersionRetired),
            ]
        );
        assert!(
            l.findings[0].remedy.contains("reencrypt"),
            "{}",
            l.findings[0]
        );
    }
}
