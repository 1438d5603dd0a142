//! Reading files from operators: CSV (UTF-8, with or without BOM) and XLSX, the same columns.
//!
//! Columns are found by header name, in any order (English or the seeds' Chinese names):
//!
//! | column | also | required | meaning |
//! |---|---|---|---|
//! | `meter_no` | `表号` | yes | the meter's number |
//! | `utility` | `类型` | yes | `electricity` or `water` (`电`/`水` accepted) |
//! | `read_at` | `抄表时间` | yes | RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in China Standard Time |
//! | `value` | `读数` | yes | the register value, a decimal with at most four places |
//! | `kind` | `读数类型` | no | `actual` (default), `estimated`, `final`, `initial` |
//! | `peak`, `valley`, `flat`, `sharp` | `峰`, `谷`, `平`, `尖` | no | time-of-use register values |
//!
//! A file that cannot be read, or lacks a required column, is refused before anything is
//! stored. Row problems are reported per row (refused with the reason) and the other rows go
//! in; every row gets an outcome in the report.

use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime, TimeZone};

use super::readings::IncomingReading;

/// Why a file was refused as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}: {detail}")]
    Unreadable { path: String, detail: String },
    #[error("{path}: required column {column:?} is missing (found: {found})")]
    MissingColumn {
        path: String,
        column: &'static str,
        found: String,
    },
    #[error("{path}: the file has a header but no rows")]
    Empty { path: String },
    #[error("{path}: unsupported file type (expected .csv or .xlsx)")]
    UnsupportedType { path: String },
}

/// A row of the file: its 1-based line (the header is line 1) and the reading, or why it could
/// not even be read as a row.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub line: usize,
    pub reading: Result<IncomingReading, String>,
}

const COLUMNS: [(&str, &[&str], bool); 9] = [
    ("meter_no", &["meter_no", "meter", "表号"], true),
    ("utility", &["utility", "类型", "表类型"], true),
    ("read_at", &["read_at", "抄表时间", "time"], true),
    ("value", &["value", "reading", "读数", "本月读数"], true),
    ("kind", &["kind", "读数类型"], false),
    ("sharp", &["sharp", "尖"], false),
    ("peak", &["peak", "峰"], false),
    ("flat", &["flat", "平"], false),
    ("valley", &["valley", "谷"], false),
];

type Positions = [Option<usize>; 9];

fn column_positions(path: &str, header: &[String]) -> Result<Positions, ImportError> {
    let mut pos = [None; 9];
    for (i, (name, aliases, required)) in COLUMNS.iter().enumerate() {
        pos[i] = header.iter().position(|h| {
            aliases
                .iter()
                .any(|a| h.trim().trim_start_matches('\u{feff}').eq_ignore_ascii_case(a))
        });
        if pos[i].is_none() && *required {
            return Err(ImportError::MissingColumn {
                path: path.into(),
                column: name,
                found: header.join(", "),
            });
        }
    }
    Ok(pos)
}

fn normalise_utility(u: &str) -> String {
    match u.trim() {
        "电" | "电表" => "electricity".into(),
        "水" | "水表" => "water".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// `read_at` as RFC 3339: values without an offset are China Standard Time.
pub fn normalise_time(text: &str) -> Result<String, String> {
    let t = text.trim();
    if chrono::DateTime::parse_from_rfc3339(t).is_ok() {
        return Ok(t.to_string());
    }
    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("valid offset");
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y/%m/%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return cst
                .from_local_datetime(&n)
                .single()
                .map(|d| d.to_rfc3339())
                .ok_or_else(|| format!("read_at {t:?}"));
        }
    }
    for fmt in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = NaiveDate::parse_from_str(t, fmt) {
            let n = d.and_hms_opt(0, 0, 0).expect("midnight");
            return cst
                .from_local_datetime(&n)
                .single()
                .map(|d| d.to_rfc3339())
                .ok_or_else(|| format!("read_at {t:?}"));
        }
    }
    Err(format!("read_at {t:?} is not a time (RFC 3339 or YYYY-MM-DD HH:MM:SS)"))
}

fn row_from_fields(fields: &[String], pos: &Positions) -> Result<IncomingReading, String> {
    let get = |i: usize| {
        pos[i]
            .and_then(|p| fields.get(p))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    Ok(IncomingReading {
        meter_no: get(0),
        utility: normalise_utility(&get(1)),
        read_at: normalise_time(&get(2))?,
        value: serde_json::Value::String(get(3)),
        kind: pos[4].map(|_| get(4)).filter(|k| !k.is_empty()),
        registers: {
            let regs: std::collections::BTreeMap<String, serde_json::Value> = (5..9)
                .filter(|&i| pos[i].is_some() && !get(i).is_empty())
                .map(|i| (COLUMNS[i].0.to_string(), serde_json::Value::String(get(i))))
                .collect();
            (!regs.is_empty()).then_some(regs)
        },
    })
}

/// Read a CSV or XLSX reading file.
pub fn read_file(path: &Path) -> Result<Vec<FileRow>, ImportError> {
    let shown = path.display().to_string();
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("csv") => {
            let bytes = std::fs::read(path).map_err(|e| ImportError::Unreadable {
                path: shown.clone(),
                detail: e.to_string(),
            })?;
            read_csv(&shown, &bytes)
        }
        Some("xlsx") => read_xlsx(path),
        _ => Err(ImportError::UnsupportedType { path: shown }),
    }
}

/// Parse CSV bytes (UTF-8; a BOM is ignored).
pub fn read_csv(path: &str, bytes: &[u8]) -> Result<Vec<FileRow>, ImportError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ImportError::Unreadable {
        path: path.into(),
        detail: format!("not UTF-8 ({e}); save the file as UTF-8 CSV"),
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| ImportError::Unreadable {
            path: path.into(),
            detail: e.to_string(),
        })?
        .iter()
        .map(str::to_string)
        .collect();
    let pos = column_positions(path, &header)?;
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let reading = match rec {
            Ok(r) => {
                let fields: Vec<String> = r.iter().map(str::to_string).collect();
                if fields.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                row_from_fields(&fields, &pos)
            }
            Err(e) => Err(format!("unreadable row: {e}")),
        };
        rows.push(FileRow { line, reading });
    }
    if rows.is_empty() {
        return Err(ImportError::Empty { path: path.into() });
    }
    Ok(rows)
}

fn read_xlsx(path: &Path) -> Result<Vec<FileRow>, ImportError> {
    use calamine::{open_workbook, Data, Reader, Xlsx};
    let shown = path.display().to_string();
    let unreadable = |detail: String| ImportError::Unreadable {
        path: shown.clone(),
        detail,
    };
    let mut wb: Xlsx<_> = open_workbook(path).map_err(|e: calamine::XlsxError| unreadable(e.to_string()))?;
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
            // Excel stores numbers as binary doubles; their shortest decimal form is the number typed.
            Data::Float(f) => f.to_string(),
            Data::Int(i) => i.to_string(),
            Data::Bool(b) => b.to_string(),
            Data::DateTime(dt) => dt
                .as_datetime()
                .map(|n| n.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            Data::DateTimeIso(s) | Data::DurationIso(s) => s.replace('T', " "),
            Data::Error(e) => format!("#ERROR {e:?}"),
        }
    };
    let mut iter = range.rows();
    let header: Vec<String> = iter.next().map(|r| r.iter().map(cell).collect()).unwrap_or_default();
    let pos = column_positions(&shown, &header)?;
    let mut rows = Vec::new();
    for (i, r) in iter.enumerate() {
        let fields: Vec<String> = r.iter().map(cell).collect();
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows.push(FileRow {
            line: i + 2,
            reading: row_from_fields(&fields, &pos),
        });
    }
    if rows.is_empty() {
        return Err(ImportError::Empty { path: shown });
    }
    Ok(rows)
}

/// What an import did, for the CLI.
#[derive(Debug, serde::Serialize)]
pub struct ImportSummary {
    pub file: String,
    pub rows: usize,
    pub accepted: usize,
    pub held: usize,
    pub duplicates: usize,
    pub refused: usize,
    /// Every row that was not simply accepted: line, outcome, reason.
    pub exceptions: Vec<(usize, String, String)>,
}

impl ImportSummary {
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}: {} rows — {} accepted, {} held for review, {} duplicates, {} refused",
            self.file, self.rows, self.accepted, self.held, self.duplicates, self.refused
        );
        for (line, status, reason) in self.exceptions.iter().take(50) {
            out.push_str(&format!("\n  line {line}: {status}: {reason}"));
        }
        if self.exceptions.len() > 50 {
            out.push_str(&format!(
                "\n  … and {} more (use --report FILE for all)",
                self.exceptions.len() - 50
            ));
        }
        out
    }
}

/// Import a file: read and check every row first (a file-level problem stores nothing), then
/// store all rows in one transaction, with a progress bar when `progress` is set.
pub async fn import_file(
    store: &crate::store::Store,
    path: &Path,
    report_path: Option<&Path>,
    progress: bool,
) -> anyhow::Result<ImportSummary> {
    use super::readings::RowOutcome;
    let rows = read_file(path)?;
    let mut lines = Vec::with_capacity(rows.len());
    let mut incoming = Vec::with_capacity(rows.len());
    let mut index_of_row = Vec::with_capacity(rows.len());
    let mut early: Vec<(usize, String)> = Vec::new();
    for (i, r) in rows.into_iter().enumerate() {
        lines.push(r.line);
        match r.reading {
            Ok(reading) => {
                index_of_row.push(i);
                incoming.push(reading);
            }
            Err(reason) => early.push((i, reason)),
        }
    }
    let bar = indicatif::ProgressBar::new(incoming.len() as u64);
    if progress && incoming.len() >= 10_000 {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("valid template"),
        );
        bar.set_message("checking and storing readings");
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let actor = format!("import:{}", path.display());
    if incoming.len() >= 10_000 {
        store.refresh_statistics().await?;
    }
    let report = store
        .ingest_readings(None, &incoming, "import", &actor, chrono::Utc::now(), &|n| {
            bar.set_position(n as u64)
        })
        .await?;
    bar.finish_and_clear();
    if incoming.len() >= 10_000 {
        store.refresh_statistics().await?;
    }
    let mut outcomes: Vec<(&'static str, String)> = vec![("", String::new()); lines.len()];
    for (i, reason) in early {
        outcomes[i] = ("refused", reason);
    }
    for (k, o) in report.results.into_iter().enumerate() {
        outcomes[index_of_row[k]] = match o {
            RowOutcome::Accepted { .. } => ("accepted", String::new()),
            RowOutcome::Held { reason, .. } => ("held", reason),
            RowOutcome::Duplicate { .. } => ("duplicate", String::new()),
            RowOutcome::Refused { reason } => ("refused", reason),
        };
    }
    let mut summary = ImportSummary {
        file: path.display().to_string(),
        rows: lines.len(),
        accepted: 0,
        held: 0,
        duplicates: 0,
        refused: 0,
        exceptions: Vec::new(),
    };
    for (i, (status, reason)) in outcomes.iter().enumerate() {
        match *status {
            "accepted" => summary.accepted += 1,
            "held" => summary.held += 1,
            "duplicate" => summary.duplicates += 1,
            _ => summary.refused += 1,
        }
        if *status != "accepted" {
            summary.exceptions.push((lines[i], status.to_string(), reason.clone()));
        }
    }
    if let Some(rp) = report_path {
        let mut w =
            csv::Writer::from_path(rp).map_err(|e| anyhow::anyhow!("writing the report {}: {e}", rp.display()))?;
        w.write_record(["line", "outcome", "reason"])?;
        for (i, (status, reason)) in outcomes.iter().enumerate() {
            w.write_record([lines[i].to_string(), status.to_string(), reason.clone()])?;
        }
        w.flush()?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_by_name_in_any_order_and_times_default_to_cst() {
        let csv = "\u{feff}value,read_at,meter_no,utility\n1234.5,2026-07-01 08:00,E1,electricity\n";
        let rows = read_csv("t.csv", csv.as_bytes()).unwrap();
        let r = rows[0].reading.as_ref().unwrap();
        assert_eq!(r.meter_no, "E1");
        assert_eq!(r.read_at, "2026-07-01T08:00:00+08:00");
        assert_eq!(r.value, serde_json::json!("1234.5"));
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn chinese_headers_are_understood() {
        let csv = "表号,类型,抄表时间,读数\nW1,水,2026-07-01,15\n";
        let r = read_csv("t.csv", csv.as_bytes()).unwrap().remove(0).reading.unwrap();
        assert_eq!(r.utility, "water");
    }

    #[test]
    fn a_missing_column_refuses_the_whole_file() {
        let err = read_csv("t.csv", b"meter_no,utility,value\nE1,electricity,1\n").unwrap_err();
        assert!(err.to_string().contains("read_at"), "{err}");
    }

    #[test]
    fn a_bad_time_is_a_row_error_not_a_file_error() {
        let rows = read_csv(
            "t.csv",
            b"meter_no,utility,read_at,value\nE1,electricity,yesterday,1\nE1,electricity,2026-07-02,2\n",
        )
        .unwrap();
        assert!(rows[0].reading.as_ref().unwrap_err().contains("yesterday"));
        assert!(rows[1].reading.is_ok());
    }

    #[test]
    fn a_non_utf8_file_is_refused_with_advice() {
        let err = read_csv("t.csv", &[0x6d, 0xff, 0xfe, 0x0a]).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
