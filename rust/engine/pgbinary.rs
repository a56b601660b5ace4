//! PostgreSQL's binary COPY format: the pieces that need no Python (see `py::copybin`).

/// The file header: signature, flags (no OIDs), header extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds per day, and days from 0001-01-01 (proleptic Gregorian) to 2000-01-01,
/// PostgreSQL's epoch for dates and timestamps.
pub const USECS_PER_DAY: i64 = 86_400_000_000;
const PG_EPOCH_ORDINAL: i64 = 730_119;
/// The largest time zone displacement PostgreSQL accepts, in seconds (15:59:59).
pub const TZ_LIMIT: i64 = 15 * 3600 + 59 * 60 + 59;

pub fn time_usecs(h: u8, m: u8, s: u8) -> i64 {
    ((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000
}

/// Days from 2000-01-01 to the given proleptic Gregorian date.
pub fn days_since_epoch(year: i32, month: u8, day: u8) -> i64 {
    // days before the year, then before the month, in the Gregorian calendar from 0001-01-01
    let y = i64::from(year) - 1;
    let before_year = y * 365 + y / 4 - y / 100 + y / 400;
    const CUMULATIVE: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let m = usize::from(month.clamp(1, 12)) - 1;
    let before_month = CUMULATIVE[m] + i64::from(leap && month > 2);
    before_year + before_month + i64::from(day) - 1 - PG_EPOCH_ORDINAL
}

/// A UUID in the canonical 8-4-4-4-12 form or as 32 hex digits (forms uuid_in reads the same
/// way); None for anything else.
pub fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    let hex: Vec<u8> = match b.len() {
        32 => b.to_vec(),
        36 => {
            if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                return None;
            }
            b.iter().copied().filter(|&c| c != b'-').collect()
        }
        _ => return None,
    };
    if hex.len() != 32 {
        return None;
    }
    let mut n: u128 = 0;
    for c in hex {
        let d = (c as char).to_digit(16)?;
        n = (n << 4) | u128::from(d);
    }
    Some(n)
}

/// Limits within which numeric_in and the binary form agree; beyond them the text path (and
/// PostgreSQL's own errors) decide.
const NUMERIC_LIMIT: i64 = 1000;

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;

fn numeric_header(out: &mut Vec<u8>, ndigits: usize, weight: i64, sign: u16, dscale: i64) {
    out.extend_from_slice(&(ndigits as u16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
}

/// An integer in numeric's binary format (display scale 0).
pub fn numeric_int(n: i64, out: &mut Vec<u8>) {
    let sign = if n < 0 { NUMERIC_NEG } else { NUMERIC_POS };
    let mut rest = n.unsigned_abs();
    let mut groups = [0u16; 5]; // 10000^5 > 2^64
    let mut len = 0;
    while rest > 0 {
        groups[len] = (rest % 10_000) as u16;
        rest /= 10_000;
        len += 1;
    }
    // least significant groups that are zero need not be sent
    let low = groups[..len].iter().position(|&g| g != 0).unwrap_or(len);
    numeric_header(out, len - low, (len as i64 - 1).max(0), sign, 0);
    for g in groups[low..len].iter().rev() {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// A decimal number as Python's str() writes ints and Decimals (`-12.30`, `1E+2`, `NaN`) in
/// numeric's binary format: ndigits, weight, sign, dscale, base-10000 digits. The display
/// scale is numeric_in's: the digits after the point, less the exponent, at least 0.
/// false for what is left to the text path (infinities, sNaN, -NaN, extreme exponents).
pub fn numeric(text: &str, out: &mut Vec<u8>) -> bool {
    if text == "NaN" {
        numeric_header(out, 0, 0, NUMERIC_NAN, 0);
        return true;
    }
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['E', 'e']) {
        Some(i) => {
            let Ok(e) = rest[i + 1..].parse::<i64>() else {
                return false;
            };
            (&rest[..i], e)
        }
        None => (rest, 0),
    };
    if exponent.abs() > NUMERIC_LIMIT {
        return false;
    }
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa.as_bytes()[..i], &mantissa.as_bytes()[i + 1..]),
        None => (mantissa.as_bytes(), &b""[..]),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.iter().all(u8::is_ascii_digit)
        || !frac_part.iter().all(u8::is_ascii_digit)
    {
        return false;
    }
    let dscale = (frac_part.len() as i64 - exponent).max(0);
    // the digits as one sequence; the power of ten of digit i is `point - 1 - i`
    let total = int_part.len() + frac_part.len();
    let digit = |i: usize| {
        if i < int_part.len() {
            int_part[i] - b'0'
        } else {
            frac_part[i - int_part.len()] - b'0'
        }
    };
    let point = int_part.len() as i64 + exponent;
    let Some(first) = (0..total).find(|&i| digit(i) != 0) else {
        // zero, with its scale
        if dscale > NUMERIC_LIMIT {
            return false;
        }
        numeric_header(out, 0, 0, NUMERIC_POS, dscale);
        return true;
    };
    let last = (first..total)
        .rev()
        .find(|&i| digit(i) != 0)
        .unwrap_or(first);
    let top = point - 1 - first as i64; // power of the first significant digit
    let bottom = point - 1 - last as i64;
    if dscale > NUMERIC_LIMIT || top.abs() > NUMERIC_LIMIT || bottom.abs() > 4 * NUMERIC_LIMIT {
        return false;
    }
    // base-10000 group g holds the powers 4g..4g+3
    let weight = top.div_euclid(4);
    let low = bottom.div_euclid(4);
    let sign = if negative { NUMERIC_NEG } else { NUMERIC_POS };
    numeric_header(out, (weight - low + 1) as usize, weight, sign, dscale);
    let mut group = weight;
    let mut value: u16 = 0;
    for i in first..=last {
        let power = top - (i - first) as i64;
        let g = power.div_euclid(4);
        if g != group {
            out.extend_from_slice(&value.to_be_bytes());
            group = g;
            value = 0;
        }
        value += u16::from(digit(i)) * 10u16.pow(power.rem_euclid(4) as u32);
    }
    out.extend_from_slice(&value.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Option<Vec<i32>> {
        let mut out = Vec::new();
        if !numeric(text, &mut out) {
            return None;
        }
        Some(
            out.chunks(2)
                .map(|c| i32::from(i16::from_be_bytes([c[0], c[1]])))
                .collect(),
        )
    }

    #[test]
    fn numeric_groups_digits_around_the_point() {
        // ndigits, weight, sign, dscale, digits
        assert_eq!(words("0"), Some(vec![0, 0, 0, 0]));
        assert_eq!(words("0.00"), Some(vec![0, 0, 0, 2]));
        assert_eq!(words("0E-7"), Some(vec![0, 0, 0, 7]));
        assert_eq!(words("1"), Some(vec![1, 0, 0, 0, 1]));
        assert_eq!(words("12345.678"), Some(vec![3, 1, 0, 3, 1, 2345, 6780]));
        assert_eq!(words("-0.01"), Some(vec![1, -1, 0x4000, 2, 100]));
        assert_eq!(words("1E+2"), Some(vec![1, 0, 0, 0, 100]));
        assert_eq!(words("1E+4"), Some(vec![1, 1, 0, 0, 1]));
        assert_eq!(words("1.5E-7"), Some(vec![1, -2, 0, 8, 15]));
        assert_eq!(words("10000.0001"), Some(vec![3, 1, 0, 4, 1, 0, 1]));
        assert_eq!(words("NaN"), Some(vec![0, 0, -16384, 0]));
        assert_eq!(words("Infinity"), None);
        assert_eq!(words("-Infinity"), None);
        assert_eq!(words("sNaN"), None);
        assert_eq!(words("-NaN"), None);
        assert_eq!(words("1E+100000"), None);
    }

    fn int_words(n: i64) -> Vec<i32> {
        let mut out = Vec::new();
        numeric_int(n, &mut out);
        out.chunks(2)
            .map(|c| i32::from(i16::from_be_bytes([c[0], c[1]])))
            .collect()
    }

    #[test]
    fn integers_as_numeric_match_their_digits() {
        for n in [
            0,
            1,
            -1,
            9999,
            10_000,
            10_001,
            123_456_789,
            -100_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(Some(int_words(n)), words(&n.to_string()), "{n}");
        }
    }

    #[test]
    fn dates_count_days_from_2000() {
        assert_eq!(days_since_epoch(2000, 1, 1), 0);
        assert_eq!(days_since_epoch(2000, 3, 1), 60);
        assert_eq!(days_since_epoch(1999, 12, 31), -1);
        assert_eq!(days_since_epoch(1970, 1, 1), -10957);
        assert_eq!(days_since_epoch(1, 1, 1), -730_119);
        assert_eq!(days_since_epoch(9999, 12, 31), 2_921_939);
    }

    #[test]
    fn uuids_in_two_forms() {
        assert_eq!(parse_uuid("00000000-0000-0000-0000-00000000002a"), Some(42));
        assert_eq!(parse_uuid("0000000000000000000000000000002A"), Some(42));
        assert_eq!(parse_uuid("{00000000-0000-0000-0000-00000000002a}"), None);
        assert_eq!(parse_uuid("0000000-00000-0000-0000-00000000002a"), None);
    }
}
