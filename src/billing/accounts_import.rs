//! Account files from the seeds' systems: CSV (UTF-8) or XLSX, columns found by header name
//! (English or the seeds' Chinese), one account per row.
//!
//! | column | also | required | meaning |
//! |---|---|---|---|
//! | `code` | `客户编号`, `户号` | yes | the account code, unique in the community |
//! | `name` | `姓名`, `户名` | yes | the customer's name |
//! | `building` | `楼号` | yes | |
//! | `unit` | `单元` | yes | |
//! | `door_no` | `门牌号`, `房号` | yes | |
//! | `phone` | `电话` | no | landline |
//! | `mobile` | `手机` | no | a mainland mobile number, stored as `+86…` |
//! | `email` | `电子邮件`, `邮箱` | no | |
//! | `meters` | `表号` | no | `NUMBER:UTILITY[:DIGITS[:MULTIPLIER]]`, several separated by `;` (e.g. `E1001:electricity:6;W1001:water:5`); digits default to 6 (electricity) and 5 (water), the multiplier to 1 |
//! | `payment_mode` | `付费方式` | no | `postpaid` (default, `后付费`) or `prepaid` (`预付费`) |
//! | `credit_rating` | `信誉度` | no | default `normal` |
//! | `customer_class` | `用户类别` | no | `residential` (default, `居民`) or `non_residential` (`非居民`) |
//! | `area_m2` | `面积` | no | floor area, for per-area charges |
//! | `occupied` | `入住` | no | `yes`/`no` (default yes) |
//! | `opened_on` | `开户日期` | no | `YYYY-MM-DD`; pro-rates annual tiers in the first year |
//! | `low_balance` | `余额预警` | no | low-balance threshold in yuan, for prepaid reminders |
//!
//! A file that cannot be read or lacks a required column is refused whole. Each row is
//! checked (and refused with its reason) on its own; see [`crate::store::Store::import_accounts`].

use std::io::Cursor;
use std::path::Path;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::import::ImportError;
use crate::domain::ids::Utility;
use crate::domain::{Fen, Quantity};

/// A sheet: header and rows (1-based line numbers, the header is line 1).
#[derive(Debug, Clone)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(usize, Vec<String>)>,
}

/// Read a CSV or XLSX file's bytes (`name` decides the type by its extension; a zip signature
/// also means XLSX).
pub fn read_table(name: &str, bytes: &[u8]) -> Result<Table, ImportError> {
    let lower = name.to_ascii_lowercase();
    let is_xlsx = lower.ends_with(".xlsx") || bytes.starts_with(b"PK\x03\x04");
    let unreadable = |detail: String| ImportError::Unreadable {
        path: name.to_string(),
        detail,
    };
    let (header, rows) = if is_xlsx {
        use calamine::{Data, Reader, Xlsx};
        let mut wb: Xlsx<_> =
            Xlsx::new(Cursor::new(bytes.to_vec())).map_err(|e: calamine::XlsxError| unreadable(e.to_string()))?;
        let sheet = wb
            .sheet_names()
            .first()
            .cloned()
            .ok_or_else(|| unreadable("the workbook has no sheet".into()))?;
        let range = wb.worksheet_range(&sheet).map_err(|e| unreadable(e.to_string()))?;
        let cell = |d: &Data| -> String {
            match d {
                Data::Empty => String::new(),
                Data::String(s) => s.clone(),
                Data::Float(f) => f.to_string(),
                Data::Int(i) => i.to_string(),
                Data::Bool(b) => b.to_string(),
                Data::DateTime(dt) => dt
                    .as_datetime()
                    .map(|n| n.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
                Data::DateTimeIso(s) | Data::DurationIso(s) => s.chars().take(10).collect(),
                Data::Error(e) => format!("#ERROR {e:?}"),
            }
        };
        let mut it = range.rows();
        let header: Vec<String> = it.next().map(|r| r.iter().map(cell).collect()).unwrap_or_default();
        let rows = it
            .enumerate()
            .map(|(i, r)| (i + 2, r.iter().map(cell).collect::<Vec<_>>()))
            .collect::<Vec<_>>();
        (header, rows)
    } else if lower.ends_with(".csv") || !lower.contains('.') {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| unreadable(format!("not UTF-8 ({e}); save the file as UTF-8 CSV")))?;
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
        let header: Vec<String> = rdr
            .headers()
            .map_err(|e| unreadable(e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect();
        let mut rows = Vec::new();
        for (i, rec) in rdr.records().enumerate() {
            let rec = rec.map_err(|e| unreadable(format!("line {}: {e}", i + 2)))?;
            rows.push((i + 2, rec.iter().map(str::to_string).collect()));
        }
        (header, rows)
    } else {
        return Err(ImportError::UnsupportedType { path: name.into() });
    };
    let rows: Vec<(usize, Vec<String>)> = rows
        .into_iter()
        .filter(|(_, f)| f.iter().any(|c| !c.trim().is_empty()))
        .collect();
    if rows.is_empty() {
        return Err(ImportError::Empty { path: name.into() });
    }
    Ok(Table { header, rows })
}

/// A meter named in an account row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterSpec {
    pub meter_no: String,
    pub utility: Utility,
    pub digit_count: i32,
    pub multiplier: Quantity,
}

/// One account to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub code: String,
    pub name: String,
    pub building: String,
    pub unit: String,
    pub door_no: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub mobile: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub meters: Vec<MeterSpec>,
    #[serde(default = "postpaid")]
    pub payment_mode: String,
    #[serde(default = "normal")]
    pub credit_rating: String,
    #[serde(default = "residential")]
    pub customer_class: String,
    /// Floor area in 1/100 m².
    #[serde(default)]
    pub area_m2_e2: Option<i64>,
    #[serde(default)]
    pub occupied: Option<bool>,
    #[serde(default)]
    pub opened_on: Option<NaiveDate>,
    #[serde(default)]
    pub low_balance_fen: Option<i64>,
}

fn postpaid() -> String {
    "postpaid".into()
}
fn normal() -> String {
    "normal".into()
}
fn residential() -> String {
    "residential".into()
}

/// Normalise a mainland mobile number to E.164 (`+86` and 11 digits starting with 1).
pub fn normalise_mobile(text: &str) -> Result<String, String> {
    let t: String = text.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    let digits = t
        .strip_prefix("+86")
        .or_else(|| t.strip_prefix("0086"))
        .or_else(|| (t.len() == 13).then(|| t.strip_prefix("86")).flatten())
        .unwrap_or(&t);
    if digits.len() == 11 && digits.starts_with('1') && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("+86{digits}"))
    } else {
        Err(format!(
            "mobile {} is not a mainland mobile number (11 digits starting with 1)",
            crate::telemetry::mask_phone(text)
        ))
    }
}

fn check_email(e: &str) -> Result<String, String> {
    let e = e.trim();
    match e.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@') && !e.contains(' ') =>
        {
            Ok(e.to_string())
        }
        _ => Err(format!("e-mail {e:?} is not an address")),
    }
}

/// Parse the `meters` cell.
pub fn parse_meters(cell: &str) -> Result<Vec<MeterSpec>, String> {
    let mut out = Vec::new();
    for part in cell.split([';', '|', '；']).map(str::trim).filter(|p| !p.is_empty()) {
        let f: Vec<&str> = part.split([':', '：']).map(str::trim).collect();
        if f.len() < 2 || f.len() > 4 || f[0].is_empty() {
            return Err(format!(
                "meter {part:?} is not NUMBER:UTILITY[:DIGITS[:MULTIPLIER]] (e.g. E1001:electricity:6)"
            ));
        }
        let utility: Utility = match f[1] {
            "电" | "电表" => Utility::Electricity,
            "水" | "水表" => Utility::Water,
            u => u.to_ascii_lowercase().parse()?,
        };
        let digit_count: i32 = match f.get(2) {
            Some(d) => d
                .parse()
                .ok()
                .filter(|d| (1..=12).contains(d))
                .ok_or_else(|| format!("meter {}: digits {d:?} must be 1 to 12", f[0]))?,
            None => match utility {
                Utility::Electricity => 6,
                Utility::Water => 5,
            },
        };
        let multiplier = match f.get(3) {
            Some(m) => Quantity::parse(m)
                .ok()
                .filter(|q| q.get() > Decimal::ZERO)
                .ok_or_else(|| format!("meter {}: multiplier {m:?} must be a positive number", f[0]))?,
            None => Quantity::parse("1").expect("1"),
        };
        out.push(MeterSpec {
            meter_no: f[0].to_string(),
            utility,
            digit_count,
            multiplier,
        });
    }
    Ok(out)
}

const COLUMNS: [(&str, &[&str], bool); 16] = [
    (
        "code",
        &["code", "account", "account_code", "客户编号", "户号", "编号"],
        true,
    ),
    ("name", &["name", "姓名", "户名"], true),
    ("building", &["building", "楼号"], true),
    ("unit", &["unit", "单元"], true),
    ("door_no", &["door_no", "door", "door number", "门牌号", "房号"], true),
    ("phone", &["phone", "电话"], false),
    ("mobile", &["mobile", "手机"], false),
    ("email", &["email", "e-mail", "电子邮件", "邮箱"], false),
    ("meters", &["meters", "meter", "表号", "表"], false),
    ("payment_mode", &["payment_mode", "付费方式"], false),
    ("credit_rating", &["credit_rating", "信誉度"], false),
    ("customer_class", &["customer_class", "用户类别"], false),
    ("area_m2", &["area_m2", "area", "面积"], false),
    ("occupied", &["occupied", "入住"], false),
    ("opened_on", &["opened_on", "开户日期"], false),
    ("low_balance", &["low_balance", "余额预警"], false),
];

/// A row of an accounts file: its line and the account, or why it was refused.
pub type AccountRow = (usize, Result<AccountSpec, String>);

/// Turn a table into account rows (a missing required column refuses the whole file).
pub fn accounts_from_table(name: &str, t: &Table) -> Result<Vec<AccountRow>, ImportError> {
    let mut pos = [None; 16];
    for (i, (col, aliases, required)) in COLUMNS.iter().enumerate() {
        pos[i] = t.header.iter().position(|h| {
            let h = h.trim().trim_start_matches('\u{feff}');
            aliases.iter().any(|a| h.eq_ignore_ascii_case(a))
        });
        if pos[i].is_none() && *required {
            return Err(ImportError::MissingColumn {
                path: name.into(),
                column: col,
                found: t.header.join(", "),
            });
        }
    }
    Ok(t.rows
        .iter()
        .map(|(line, fields)| {
            let get = |i: usize| -> String {
                pos[i]
                    .and_then(|p| fields.get(p))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            (*line, row_to_spec(&get))
        })
        .collect())
}

fn row_to_spec(get: &dyn Fn(usize) -> String) -> Result<AccountSpec, String> {
    let opt = |i: usize| Some(get(i)).filter(|s| !s.is_empty());
    for (i, name) in [(0, "code"), (1, "name"), (2, "building"), (3, "unit"), (4, "door_no")] {
        if get(i).is_empty() {
            return Err(format!("{name} is empty"));
        }
    }
    let payment_mode = match get(9).as_str() {
        "" | "postpaid" | "后付费" => "postpaid",
        "prepaid" | "预付费" => "prepaid",
        o => return Err(format!("payment_mode {o:?} is not postpaid or prepaid")),
    };
    let customer_class = match get(11).as_str() {
        "" | "residential" | "居民" => "residential",
        "non_residential" | "非居民" => "non_residential",
        o => return Err(format!("customer_class {o:?} is not residential or non_residential")),
    };
    let area_m2_e2 = match opt(12) {
        Some(a) => {
            let q = Decimal::from_str_exact(&a).map_err(|_| format!("area_m2 {a:?} is not a number"))?;
            if q <= Decimal::ZERO || q.scale() > 2 {
                return Err(format!("area_m2 {a} must be positive with at most two decimals"));
            }
            Some(
                (q * Decimal::ONE_HUNDRED)
                    .trunc()
                    .try_into()
                    .map_err(|_| format!("area_m2 {a} is too large"))?,
            )
        }
        None => None,
    };
    let occupied = match get(13).to_ascii_lowercase().as_str() {
        "" => None,
        "yes" | "y" | "true" | "1" | "是" => Some(true),
        "no" | "n" | "false" | "0" | "否" => Some(false),
        o => return Err(format!("occupied {o:?} is not yes or no")),
    };
    let opened_on = match opt(14) {
        Some(d) => {
            Some(NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| format!("opened_on {d:?} is not YYYY-MM-DD"))?)
        }
        None => None,
    };
    let low_balance_fen = match opt(15) {
        Some(y) => {
            let f = Fen::parse_yuan(&y).map_err(|e| format!("low_balance: {e}"))?;
            if f.is_negative() {
                return Err("low_balance cannot be negative".into());
            }
            Some(f.get())
        }
        None => None,
    };
    Ok(AccountSpec {
        code: get(0),
        name: get(1),
        building: get(2),
        unit: get(3),
        door_no: get(4),
        phone: opt(5),
        mobile: opt(6).map(|m| normalise_mobile(&m)).transpose()?,
        email: opt(7).map(|e| check_email(&e)).transpose()?,
        meters: parse_meters(&get(8))?,
        payment_mode: payment_mode.into(),
        credit_rating: opt(10).unwrap_or_else(normal),
        customer_class: customer_class.into(),
        area_m2_e2,
        occupied,
        opened_on,
        low_balance_fen,
    })
}

impl AccountSpec {
    /// Check an account given by API (the file path checks as it parses).
    pub fn validate(mut self) -> Result<AccountSpec, String> {
        for (v, name) in [
            (&self.code, "code"),
            (&self.name, "name"),
            (&self.building, "building"),
            (&self.unit, "unit"),
            (&self.door_no, "door_no"),
        ] {
            if v.trim().is_empty() {
                return Err(format!("{name} is empty"));
            }
        }
        if !["postpaid", "prepaid"].contains(&self.payment_mode.as_str()) {
            return Err(format!(
                "payment_mode {:?} is not postpaid or prepaid",
                self.payment_mode
            ));
        }
        if !["residential", "non_residential"].contains(&self.customer_class.as_str()) {
            return Err(format!(
                "customer_class {:?} is not residential or non_residential",
                self.customer_class
            ));
        }
        self.mobile = self.mobile.as_deref().map(normalise_mobile).transpose()?;
        self.email = self.email.as_deref().map(check_email).transpose()?;
        for m in &self.meters {
            if m.meter_no.trim().is_empty() || !(1..=12).contains(&m.digit_count) || m.multiplier.get() <= Decimal::ZERO
            {
                return Err(format!(
                    "meter {:?} needs a number, 1 to 12 digits and a positive multiplier",
                    m.meter_no
                ));
            }
        }
        Ok(self)
    }
}

/// Read an accounts file from disk.
pub fn read_accounts_file(path: &Path) -> Result<Vec<AccountRow>, ImportError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ImportError::Unreadable {
        path: name.clone(),
        detail: e.to_string(),
    })?;
    let t = read_table(&name, &bytes)?;
    accounts_from_table(&name, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_style_chinese_headers_and_meters_parse() {
        let csv = "客户编号,姓名,楼号,单元,门牌号,电话,手机,邮箱,表号,付费方式\n\
                   A-1,张伟,1,2,301,021-5555,138 0013 8000,zw@example.com,E1:电:6;W1:水,预付费\n";
        let t = read_table("a.csv", csv.as_bytes()).unwrap();
        let rows = accounts_from_table("a.csv", &t).unwrap();
        let a = rows[0].1.as_ref().unwrap();
        assert_eq!(a.mobile.as_deref(), Some("+8613800138000"));
        assert_eq!(a.payment_mode, "prepaid");
        assert_eq!(a.meters.len(), 2);
        assert_eq!((a.meters[1].utility, a.meters[1].digit_count), (Utility::Water, 5));
        assert_eq!(rows[0].0, 2);
    }

    #[test]
    fn bad_cells_refuse_their_row_with_the_reason() {
        let csv = "code,name,building,unit,door_no,mobile,email,meters\n\
                   A1,X,1,1,1,12345,,\n\
                   A2,Y,1,1,2,,not-an-email,\n\
                   A3,Z,1,1,3,,,E9:gas\n\
                   ,W,1,1,4,,,\n";
        let t = read_table("a.csv", csv.as_bytes()).unwrap();
        let rows = accounts_from_table("a.csv", &t).unwrap();
        let errs: Vec<String> = rows.iter().map(|r| r.1.clone().unwrap_err()).collect();
        assert!(errs[0].contains("mobile"), "{errs:?}");
        assert!(!errs[0].contains("12345"), "numbers are masked in messages: {errs:?}");
        assert!(errs[1].contains("e-mail"));
        assert!(errs[2].contains("gas"));
        assert!(errs[3].contains("code is empty"));
    }

    #[test]
    fn a_missing_required_column_refuses_the_file() {
        let t = read_table("a.csv", b"code,name,building,unit\nA,B,1,1\n").unwrap();
        assert!(accounts_from_table("a.csv", &t)
            .unwrap_err()
            .to_string()
            .contains("door_no"));
    }
}
