//! Parsing of `/search` query strings into a [`Window`] (PRODUCT.md §3).
//!
//! Owns: the accepted date-time forms, conversion of
//! offset date-times into the provider's time zone, and the error messages
//! that name the parameter. Pure functions only: no I/O, no store, no HTTP
//! types.
//!
//! Accepted values: `YYYY-MM-DDTHH:MM:SS[.fraction][Z|±HH:MM]` (`T` may also
//! be `t` or a space, `Z` may be `z`), years 0001–9999, seconds up to 60.
//! Without an offset the value is provider-local. A fraction rounds the
//! bound inwards: `starts_at` up to the next whole second, `ends_at` down,
//! because plan times are whole seconds.

use chrono::{NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

use crate::model::{Position, SearchQuery, Window};
use crate::percent::decode as percent_decode;

/// What a bad query says. The message names the parameter and the accepted
/// forms; it never echoes more than a short prefix of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct QueryError {
    pub message: String,
}

const FORMS: &str = "an RFC 3339 date-time such as 2021-06-30T21:00:00Z or \
2021-06-30T23:00:00+02:00, or a provider-local date-time without offset such as \
2021-06-30T21:00:00 (fractional seconds allowed, years 0001-9999)";

fn bad(param: &str, what: &str) -> QueryError {
    QueryError {
        message: format!("{param}: {what}; expected {FORMS}"),
    }
}

/// Which side of the window a value bounds (decides fraction rounding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Lower,
    Upper,
}

/// Largest `limit` of a page.
pub const MAX_LIMIT: u32 = 100_000;

/// Parses a raw `/search` query string (without `?`): the window plus the
/// page parameters `limit` (1..=100,000) and `after` (a cursor from a
/// `Link` header). Unknown parameters are ignored; each of ours may appear
/// at most once.
pub fn parse_search(raw: &str, tz: Tz) -> Result<SearchQuery, QueryError> {
    let window = parse_search_query(raw, tz)?;
    let mut q = SearchQuery::from(window);
    let (mut seen_limit, mut seen_after) = (false, false);
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let Ok(key) = percent_decode(k) else {
            continue;
        };
        let seen = match key.as_str() {
            "limit" => &mut seen_limit,
            "after" => &mut seen_after,
            _ => continue,
        };
        if *seen {
            return Err(QueryError {
                message: format!("{key}: given more than once"),
            });
        }
        *seen = true;
        let value = percent_decode(v).map_err(|e| QueryError {
            message: format!("{key}: {e}"),
        })?;
        if key == "limit" {
            q.limit = Some(
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n) && !value.starts_with('+'))
                    .ok_or_else(|| QueryError {
                        message: format!(
                            "limit: expected a whole number of plans from 1 to {MAX_LIMIT}"
                        ),
                    })?,
            );
        } else {
            q.after = Some(decode_cursor(&value).ok_or_else(|| QueryError {
                message: "after: not a cursor of this server; follow the URL of the                           `Link: <...>; rel=\"next\"` header as given"
                    .into(),
            })?);
        }
    }
    Ok(q)
}

/// The opaque `after` value for a position: 65 lowercase hex digits, the
/// start (16, two's complement), `1` and the end or `0` and sixteen zeros
/// without end (17), and the plan id, a UUID (32). Every value of that
/// shape is a position, so a schema-driven client can only send positions
/// or malformed values (400); an edited cursor that keeps the shape is
/// another position, which the keyset walk handles like any other.
pub fn encode_cursor(p: &Position) -> String {
    let id = p.id;
    match p.end {
        Some(end) => format!("{:016x}1{:016x}{}", p.start as u64, end as u64, id.simple()),
        None => format!("{:016x}0{:016x}{}", p.start as u64, 0, id.simple()),
    }
}

/// Length of a cursor.
pub const CURSOR_LEN: usize = 65;

fn decode_cursor(s: &str) -> Option<Position> {
    let b = s.as_bytes();
    if b.len() != CURSOR_LEN || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let int = |r: std::ops::Range<usize>| u64::from_str_radix(&s[r], 16).ok().map(|v| v as i64);
    let end = match b[16] {
        b'0' => None,
        b'1' => Some(int(17..33)?),
        _ => return None,
    };
    Some(Position {
        start: int(0..16)?,
        end,
        id: uuid::Uuid::parse_str(&s[33..]).ok()?,
    })
}

/// Parses a raw query string (without `?`) into a window. Unknown
/// parameters are ignored; `starts_at` / `ends_at` may appear at most once.
pub fn parse_search_query(raw: &str, tz: Tz) -> Result<Window, QueryError> {
    let mut window = Window::default();
    let (mut seen_start, mut seen_end) = (false, false);
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = match percent_decode(k) {
            Ok(key) => key,
            // A parameter we cannot even name is not one of ours.
            Err(_) => continue,
        };
        let (slot, seen, bound) = match key.as_str() {
            "starts_at" => (&mut window.starts_at, &mut seen_start, Bound::Lower),
            "ends_at" => (&mut window.ends_at, &mut seen_end, Bound::Upper),
            _ => continue,
        };
        if *seen {
            return Err(bad(&key, "given more than once"));
        }
        *seen = true;
        let value = percent_decode(v).map_err(|e| bad(&key, e))?;
        if value.is_empty() {
            return Err(bad(&key, "empty value"));
        }
        *slot = Some(parse_bound(&value, tz, bound).map_err(|e| bad(&key, e))?);
    }
    Ok(window)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
}

/// Parses one value into provider-local seconds (see `model::local_seconds`).
fn parse_bound(s: &str, tz: Tz, bound: Bound) -> Result<i64, &'static str> {
    const MALFORMED: &str = "not a date-time";
    let b = s.as_bytes();
    if b.len() < 19 || b.len() > 64 {
        return Err(MALFORMED);
    }
    let field = |r: std::ops::Range<usize>| digits(&b[r]).ok_or(MALFORMED);
    if b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(MALFORMED);
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err(MALFORMED);
    }
    let (y, mo, d) = (field(0..4)?, field(5..7)?, field(8..10)?);
    let (h, mi, sec) = (field(11..13)?, field(14..16)?, field(17..19)?);
    if y < 1 {
        return Err("year out of range 0001-9999");
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err("no such date");
    }
    if h > 23 || mi > 59 || sec > 60 {
        return Err("no such time of day");
    }
    let mut rest = &b[19..];
    let mut fraction = false;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let n = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err(MALFORMED);
        }
        fraction = after_dot[..n].iter().any(|&c| c != b'0');
        rest = &after_dot[n..];
    }
    let offset = match rest {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let oh = digits(&[*oh1, *oh2]).ok_or(MALFORMED)?;
            let om = digits(&[*om1, *om2]).ok_or(MALFORMED)?;
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            let off = oh * 3600 + om * 60;
            Some(if *sign == b'-' { -off } else { off })
        }
        _ => return Err(MALFORMED),
    };
    // A leap second (`:60`) bounds like the instant just after `:59`.
    let sec = if sec == 60 && bound == Bound::Upper {
        59
    } else {
        sec
    };
    let mut secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec;
    if fraction && bound == Bound::Lower {
        secs += 1;
    }
    Ok(match offset {
        None => secs,
        Some(off) => utc_to_local(secs - off, tz),
    })
}

/// Converts a UTC instant (seconds) to the provider's wall-clock seconds.
fn utc_to_local(utc: i64, tz: Tz) -> i64 {
    match chrono::DateTime::from_timestamp(utc, 0) {
        Some(t) => {
            let naive: NaiveDateTime = t.naive_utc();
            let off = tz.offset_from_utc_datetime(&naive).fix().local_minus_utc();
            utc + i64::from(off)
        }
        None => utc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_malformed_ones_are_refused() {
        for p in [
            Position {
                start: -62_135_596_800,
                end: None,
                id: uuid::Uuid::parse_str("7b9c1a6e-0000-5000-8000-000000000001").unwrap(),
            },
            Position {
                start: 1_625_000_000,
                end: Some(-1),
                id: uuid::Uuid::parse_str("ffffffff-ffff-5fff-bfff-ffffffffffff").unwrap(),
            },
        ] {
            let c = encode_cursor(&p);
            assert_eq!(c.len(), CURSOR_LEN);
            let q = parse_search(&format!("limit=5&after={c}"), Tz::UTC).unwrap();
            assert_eq!((q.limit, q.after), (Some(5), Some(p.clone())));
            // Every value of the documented shape is a position.
            let mut other = c.clone().into_bytes();
            other[3] = if other[3] == b'7' { b'8' } else { b'7' };
            let other = String::from_utf8(other).unwrap();
            assert!(parse_search(&format!("after={other}"), Tz::UTC).is_ok());
        }
        let good = encode_cursor(&Position {
            start: 5,
            end: Some(6),
            id: uuid::Uuid::parse_str("7b9c1a6e-0000-5000-8000-000000000001").unwrap(),
        });
        let flag2 = format!("{}2{}", &good[..16], &good[17..]);
        let upper = good.to_uppercase();
        let short = &good[..64];
        let long = format!("{good}0");
        let junk = format!("{}g", &good[..64]);
        for bad in ["", "zz", "0", short, &long, &flag2, &upper, &junk] {
            let e = parse_search(&format!("after={bad}"), Tz::UTC).unwrap_err();
            assert!(e.message.starts_with("after:"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn limit_is_1_to_100000_and_named_when_bad() {
        assert_eq!(parse_search("limit=1", Tz::UTC).unwrap().limit, Some(1));
        assert_eq!(
            parse_search("limit=100000", Tz::UTC).unwrap().limit,
            Some(100_000)
        );
        assert_eq!(parse_search("", Tz::UTC).unwrap().limit, None);
        for bad in [
            "limit=0",
            "limit=100001",
            "limit=-1",
            "limit=+5",
            "limit=",
            "limit=1.5",
            "limit=ten",
            "limit=1&limit=2",
            "limit=99999999999999999999",
        ] {
            let e = parse_search(bad, Tz::UTC).unwrap_err();
            assert!(e.message.starts_with("limit:"), "{bad}: {}", e.message);
        }
        // A value that does not decode says so, not that it is no number.
        for (bad, said) in [
            ("limit=1%", "limit: malformed percent-encoding"),
            ("after=%ff", "after: not valid UTF-8 once percent-decoded"),
        ] {
            assert_eq!(parse_search(bad, Tz::UTC).unwrap_err().message, said);
        }
    }
    use crate::model::{local_seconds, parse_feed_datetime};

    fn local(s: &str) -> i64 {
        local_seconds(&parse_feed_datetime(s).unwrap())
    }

    fn window(q: &str) -> Result<Window, QueryError> {
        parse_search_query(q, Tz::UTC)
    }

    #[test]
    fn both_parameters_are_optional_and_unknown_ones_ignored() {
        assert_eq!(window("").unwrap(), Window::default());
        assert_eq!(window("foo=bar&x").unwrap(), Window::default());
        let w = window("starts_at=2021-06-30T21:00:00Z&page=2").unwrap();
        assert_eq!(w.starts_at, Some(local("2021-06-30T21:00:00")));
        assert_eq!(w.ends_at, None);
    }

    #[test]
    fn offsets_are_converted_to_the_provider_zone() {
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        // 19:00Z in summer is 21:00 in Madrid.
        let w = parse_search_query("starts_at=2021-06-30T19:00:00Z", madrid).unwrap();
        assert_eq!(w.starts_at, Some(local("2021-06-30T21:00:00")));
        let w = parse_search_query("starts_at=2021-06-30T23:00:00%2B02:00", madrid).unwrap();
        assert_eq!(w.starts_at, Some(local("2021-06-30T23:00:00")));
        // Unencoded '+' is kept as the offset sign.
        let w = window("ends_at=2021-06-30T23:00:00+02:00").unwrap();
        assert_eq!(w.ends_at, Some(local("2021-06-30T21:00:00")));
        // Naive values are provider-local, whatever the zone.
        let w = parse_search_query("ends_at=2021-06-30T21:00:00", madrid).unwrap();
        assert_eq!(w.ends_at, Some(local("2021-06-30T21:00:00")));
    }

    #[test]
    fn fractions_round_the_bounds_inwards() {
        let w = window("starts_at=2021-06-30T21:00:00.5Z&ends_at=2021-06-30T22:00:00.999").unwrap();
        assert_eq!(w.starts_at, Some(local("2021-06-30T21:00:01")));
        assert_eq!(w.ends_at, Some(local("2021-06-30T22:00:00")));
        let w = window("starts_at=2021-06-30T21:00:00.000Z").unwrap();
        assert_eq!(w.starts_at, Some(local("2021-06-30T21:00:00")));
    }

    #[test]
    fn extreme_years_are_accepted() {
        assert_eq!(
            window("starts_at=0001-01-01T00:00:00Z").unwrap().starts_at,
            Some(local("0001-01-01T00:00:00"))
        );
        assert_eq!(
            window("ends_at=9999-12-31T23:59:59-23:59").unwrap().ends_at,
            Some(local("9999-12-31T23:59:59") + 23 * 3600 + 59 * 60)
        );
        assert!(window("starts_at=2016-12-31T23:59:60Z").is_ok());
    }

    #[test]
    fn every_bad_value_names_the_parameter() {
        for q in [
            "starts_at=",
            "starts_at",
            "ends_at=tomorrow",
            "starts_at=2021-02-30T00:00:00Z",
            "starts_at=0000-01-01T00:00:00Z",
            "starts_at=2021-06-30",
            "starts_at=2021-06-30T21:00Z",
            "starts_at=2021-06-30T24:00:00Z",
            "starts_at=2021-06-30T21:00:00+0200",
            "starts_at=2021-06-30T21:00:00.Z",
            "starts_at=2021-06-30T21:00:00%ZZ",
            "starts_at=%FF%FE",
            "starts_at=2021-06-30T21:00:00Z&starts_at=2021-06-30T21:00:00Z",
            "ends_at=1&ends_at=2",
        ] {
            let err = window(q).unwrap_err().message;
            let name = if q.starts_with("ends") {
                "ends_at"
            } else {
                "starts_at"
            };
            assert!(err.starts_with(name), "{q}: {err}");
            assert!(err.contains("RFC 3339"), "{q}: {err}");
        }
    }

    #[test]
    fn starts_after_ends_is_well_formed() {
        let w = window("starts_at=2022-01-01T00:00:00Z&ends_at=2021-01-01T00:00:00Z").unwrap();
        assert!(w.is_empty());
    }

    #[test]
    fn civil_days_agree_with_chrono() {
        for s in [
            "0001-01-01T00:00:00",
            "1970-01-01T00:00:00",
            "2000-02-29T12:34:56",
        ] {
            let q = format!("starts_at={s}");
            assert_eq!(window(&q).unwrap().starts_at, Some(local(s)), "{s}");
        }
    }

    mod props {
        use super::*;
        use chrono::{NaiveDate, TimeZone};
        use proptest::prelude::*;

        const ZONES: [&str; 5] = [
            "UTC",
            "Europe/Madrid",
            "America/New_York",
            "Asia/Kolkata",
            "Pacific/Chatham",
        ];

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn arbitrary_query_strings_never_panic(raw in any::<String>()) {
                let _ = parse_search_query(&raw, Tz::UTC);
            }

            #[test]
            fn near_miss_values_never_panic_and_errors_name_the_parameter(
                v in "[0-9T:.+\\-Zz %]{0,40}",
                zone in 0..ZONES.len(),
            ) {
                let tz: Tz = ZONES[zone].parse().unwrap();
                if let Err(e) = parse_search_query(&format!("ends_at={v}"), tz) {
                    prop_assert!(e.message.starts_with("ends_at"), "{}", e.message);
                }
            }

            #[test]
            fn valid_values_parse_to_the_local_seconds_chrono_computes(
                y in 1i32..=9999, mo in 1u32..=12, d in 1u32..=31,
                h in 0u32..24, mi in 0u32..60, sec in 0u32..60,
                frac in proptest::option::of("[0-9]{1,9}"),
                offset in proptest::option::of(-(23 * 60 + 59)..=(23i32 * 60 + 59)),
                zulu in any::<bool>(),
                lower_t in any::<bool>(),
                encode in any::<bool>(),
                zone in 0..ZONES.len(),
            ) {
                let Some(date) = NaiveDate::from_ymd_opt(y, mo, d) else {
                    // No such day: always refused.
                    let q = format!("starts_at={y:04}-{mo:02}-{d:02}T00:00:00");
                    prop_assert!(parse_search_query(&q, Tz::UTC).is_err());
                    return Ok(());
                };
                let tz: Tz = ZONES[zone].parse().unwrap();
                let naive = date.and_hms_opt(h, mi, sec).unwrap();
                let sep = if lower_t { 't' } else { 'T' };
                let mut text = format!("{}{sep}{}", naive.format("%Y-%m-%d"), naive.format("%H:%M:%S"));
                if let Some(f) = &frac {
                    text.push('.');
                    text.push_str(f);
                }
                match offset {
                    None => {}
                    Some(0) if zulu => text.push('Z'),
                    Some(m) => {
                        let sign = if m < 0 { '-' } else { '+' };
                        text.push_str(&format!("{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60));
                    }
                }
                let value = if encode {
                    text.replace('+', "%2B").replace(':', "%3A")
                } else {
                    text.clone()
                };
                let w = parse_search_query(&format!("starts_at={value}&ends_at={value}"), tz)
                    .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                // What chrono says: the instant (lower bound rounded up to
                // the next whole second), in the provider's wall-clock time.
                let round_up = frac.as_deref().is_some_and(|f| f.bytes().any(|b| b != b'0'));
                let expect = |extra: i64| -> i64 {
                    let t = naive + chrono::Duration::seconds(extra);
                    match offset {
                        None => t.and_utc().timestamp(),
                        Some(m) => {
                            let utc = t - chrono::Duration::minutes(i64::from(m));
                            tz.from_utc_datetime(&utc).naive_local().and_utc().timestamp()
                        }
                    }
                };
                prop_assert_eq!(w.starts_at, Some(expect(i64::from(round_up))), "{}", text);
                prop_assert_eq!(w.ends_at, Some(expect(0)), "{}", text);
            }
        }
    }
}
