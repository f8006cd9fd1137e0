//! A fixed date for `strftime_now`, so prepared data does not depend on
//! the day it was made.

use crate::error::TemplateError;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A calendar date (proleptic Gregorian), midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedDate {
    /// Year, e.g. 2024.
    pub year: i32,
    /// Month 1–12.
    pub month: u32,
    /// Day 1–31.
    pub day: u32,
}

impl FixedDate {
    /// Parses `26 Jul 2024`, `26 July 2024` or `2024-07-26`.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        let bad = || TemplateError::BadDate {
            found: s.to_string(),
        };
        let t = s.trim();
        let (year, month, day) = if let [y, m, d] = t.split('-').collect::<Vec<_>>()[..] {
            (
                y.parse().map_err(|_| bad())?,
                m.parse().map_err(|_| bad())?,
                d.parse().map_err(|_| bad())?,
            )
        } else if let [d, m, y] = t.split_whitespace().collect::<Vec<_>>()[..] {
            let lower = m.to_ascii_lowercase();
            let month = MONTHS
                .iter()
                .position(|name| {
                    let n = name.to_ascii_lowercase();
                    n == lower || (lower.len() == 3 && n.starts_with(&lower))
                })
                .ok_or_else(bad)? as u32
                + 1;
            (
                y.parse().map_err(|_| bad())?,
                month,
                d.parse().map_err(|_| bad())?,
            )
        } else {
            return Err(bad());
        };
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(bad());
        }
        Ok(Self { year, month, day })
    }

    /// Monday = 0 … Sunday = 6 (Sakamoto's method).
    fn weekday(&self) -> usize {
        const T: [i32; 12] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4];
        let y = if self.month < 3 {
            self.year - 1
        } else {
            self.year
        };
        let sunday0 =
            (y + y / 4 - y / 100 + y / 400 + T[self.month as usize - 1] + self.day as i32)
                .rem_euclid(7);
        ((sunday0 + 6) % 7) as usize
    }

    fn day_of_year(&self) -> u32 {
        (1..self.month)
            .map(|m| days_in_month(self.year, m))
            .sum::<u32>()
            + self.day
    }

    /// Python `datetime.strftime` for the date fields (`%d %-d %b %B %m %-m
    /// %y %Y %a %A %j`); time fields print as midnight; `%%` is `%`.
    pub fn strftime(&self, fmt: &str) -> String {
        let mut out = String::new();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut spec = chars.next();
            let no_pad = spec == Some('-');
            if no_pad {
                spec = chars.next();
            }
            let num = |v: u32, w: usize| {
                if no_pad {
                    v.to_string()
                } else {
                    format!("{v:0w$}")
                }
            };
            match spec {
                Some('d') => out.push_str(&num(self.day, 2)),
                Some('m') => out.push_str(&num(self.month, 2)),
                Some('Y') => out.push_str(&self.year.to_string()),
                Some('y') => out.push_str(&num(self.year.rem_euclid(100) as u32, 2)),
                Some('b') => out.push_str(&MONTHS[self.month as usize - 1][..3]),
                Some('B') => out.push_str(MONTHS[self.month as usize - 1]),
                Some('a') => out.push_str(&DAYS[self.weekday()][..3]),
                Some('A') => out.push_str(DAYS[self.weekday()]),
                Some('j') => out.push_str(&num(self.day_of_year(), 3)),
                Some('H' | 'M' | 'S' | 'I') => out.push_str(&num(0, 2)),
                Some('%') => out.push('%'),
                Some(other) => {
                    out.push('%');
                    out.push(other);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_like_python() {
        let d = FixedDate::parse("26 Jul 2024").unwrap();
        assert_eq!(d, FixedDate::parse("2024-07-26").unwrap());
        assert_eq!(d.strftime("%d %b %Y"), "26 Jul 2024");
        // 26 July 2024 was a Friday.
        assert_eq!(
            d.strftime("%A %-d %B %y, %j %%"),
            "Friday 26 July 24, 208 %"
        );
        assert_eq!(
            FixedDate::parse("1 Jan 2000").unwrap().strftime("%a %d/%m"),
            "Sat 01/01"
        );
        assert!(FixedDate::parse("31 Feb 2024").is_err());
        assert!(FixedDate::parse("tomorrow").is_err());
    }
}
