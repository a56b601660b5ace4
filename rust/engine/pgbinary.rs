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

/// A decimal number as Python's str() writes ints and Decimals (`-12.30`, `1E+2`, `NaN`) in
/// numeric's binary format: ndigits, weight, sign, dscale, base-10000 digits. The display
/// scale is numeric_in's: the digits after the point, less the exponent, at least 0.
/// false for what is left to the text path (infinities, sNaN, -NaN, extreme exponents).
pub fn numeric(text: &str, out: &mut Vec<u8>) -> bool {
    const POS: u16 = 0x0000;
    const NEG: u16 = 0x4000;
    const NAN: u16 = 0xC000;
    if text == "NaN" {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&NAN.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
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
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let dscale = (frac_part.len() as i64 - exponent).max(0);
    // every digit, and the power of ten of the first one plus one (digits before the point)
    let all: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|c| c - b'0')
        .collect();
    let mut point = int_part.len() as i64 + exponent;
    let first = all.iter().position(|&d| d != 0);
    let Some(first) = first else {
        // zero, with its scale
        if dscale > NUMERIC_LIMIT {
            return false;
        }
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&POS.to_be_bytes());
        out.extend_from_slice(&(dscale as u16).to_be_bytes());
        return true;
    };
    let last = all.iter().rposition(|&d| d != 0).unwrap_or(first);
    let digits = &all[first..=last];
    point -= first as i64;
    if dscale > NUMERIC_LIMIT
        || point.abs() > NUMERIC_LIMIT
        || digits.len() as i64 > 4 * NUMERIC_LIMIT
    {
        return false;
    }
    // digit i stands for 10^(point - 1 - i); base-10000 group g holds powers 4g..4g+3
    let top = point - 1;
    let bottom = point - digits.len() as i64;
    let weight = top.div_euclid(4);
    let low = bottom.div_euclid(4);
    let ndigits = (weight - low + 1) as usize;
    let mut groups = vec![0u16; ndigits];
    for (i, &d) in digits.iter().enumerate() {
        let power = top - i as i64;
        let g = power.div_euclid(4);
        let within = power.rem_euclid(4) as u32;
        groups[(weight - g) as usize] += u16::from(d) * 10u16.pow(within);
    }
    out.extend_from_slice(&(ndigits as u16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&(if negative { NEG } else { POS }).to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
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
