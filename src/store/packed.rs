//! Large reads as one value on SQLite.
//!
//! sqlx runs each SQLite connection on a worker thread of its own and hands every fetched row
//! to the caller's thread through a channel: a copy of each column value (`sqlite3_value_dup`),
//! a send and, most of the time, a wake-up of the other thread. For a bill run's tens of
//! thousands of rows per chunk that hand-over cost more than SQLite's own work (a `perf`
//! profile: futex waits and wake-ups, value copies and frees on both threads). So the hot reads
//! ask SQLite for one JSON text holding every row (`json_group_array(json_array(…))`), which
//! crosses once and is parsed here with `serde_json`. PostgreSQL's rows come straight off its
//! socket on the caller's thread; there the same query is fetched as rows.
//!
//! [`fetch_rows!`] takes the column list and the rest of the query separately and builds both
//! forms, so the two backends run the same query. The row type implements `sqlx::FromRow` (the
//! PostgreSQL form, columns by name) and `serde::Deserialize` (the SQLite form, columns by
//! position, in the order of the column list; derived `Deserialize` reads a struct from a JSON
//! array field by field). Row order is not promised by the packed form: callers sort what they
//! need sorted.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::Deserialize;

/// Whether a transaction's backend reads large results as one packed value.
pub(crate) trait Packs {
    fn packs(&self) -> bool;
}

impl Packs for sqlx::Transaction<'_, sqlx::Sqlite> {
    fn packs(&self) -> bool {
        true
    }
}

impl Packs for sqlx::Transaction<'_, sqlx::Postgres> {
    fn packs(&self) -> bool {
        false
    }
}

/// A column's expression without its alias (`CAST(x AS BIGINT) AS total` → `CAST(x AS BIGINT)`).
fn expression(col: &str) -> &str {
    match col.rsplit_once(" AS ") {
        Some((expr, alias)) if !alias.is_empty() && alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            expr
        }
        _ => col,
    }
}

/// `SELECT json_group_array(json_array(c0, …)) FROM (SELECT cols AS c0, … rest)`.
pub(crate) fn packed_sql(cols: &[&str], rest: &str) -> String {
    let inner: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} AS c{i}", expression(c)))
        .collect();
    let outer: Vec<String> = (0..cols.len()).map(|i| format!("c{i}")).collect();
    format!(
        "SELECT json_group_array(json_array({})) FROM (SELECT {} {rest})",
        outer.join(", "),
        inner.join(", ")
    )
}

/// `SELECT cols rest`.
pub(crate) fn plain_sql(cols: &[&str], rest: &str) -> String {
    format!("SELECT {} {rest}", cols.join(", "))
}

/// The rows of a packed value (`None` or `[]`: no rows).
pub(crate) fn unpack<T: DeserializeOwned>(text: Option<&str>) -> Result<Vec<T>, String> {
    match text {
        None | Some("") => Ok(Vec::new()),
        Some(t) => serde_json::from_str(t).map_err(|e| format!("reading the packed rows: {e}")),
    }
}

/// Fetch every row of `SELECT $cols $rest` as `$row`s: on SQLite as one packed value, on
/// PostgreSQL as rows (see the module documentation). `$binds` bind `$1`, `$2`, … in order.
macro_rules! fetch_rows {
    ($tx:expr, $what:expr, $row:ty, $cols:expr, $rest:expr, [$($bind:expr),* $(,)?]) => {{
        let what: &'static str = $what;
        let cols: &[&str] = $cols;
        let rest: &str = $rest;
        if $crate::store::packed::Packs::packs(&$tx) {
            let text: Option<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe($crate::store::packed::packed_sql(cols, rest)))
                    $(.bind($bind))*
                    .fetch_one(&mut *$tx)
                    .await
                    .map_err(|e| $crate::store::StoreError::db(what, e))?;
            $crate::store::packed::unpack::<$row>(text.as_deref())
                .map_err(|reason| $crate::store::StoreError::Refused { what, reason })?
        } else {
            sqlx::query_as::<_, $row>(sqlx::AssertSqlSafe($crate::store::packed::plain_sql(cols, rest)))
                $(.bind($bind))*
                .fetch_all(&mut *$tx)
                .await
                .map_err(|e| $crate::store::StoreError::db(what, e))?
        }
    }};
}
pub(crate) use fetch_rows;

/// A time as sqlx writes it to SQLite (RFC 3339), or as SQLite's own functions write it.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%F %T%.f", "%FT%T%.f", "%F %R", "%FT%R"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// `#[serde(deserialize_with = "…")]` for a stored time.
pub(crate) fn time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse_time(&s).ok_or_else(|| D::Error::custom(format!("not a stored time: {s:?}")))
}

/// `#[serde(deserialize_with = "…")]` for a stored boolean that may be null (SQLite keeps 0/1).
pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Int(i64),
    }
    Ok(Option::<B>::deserialize(d)?.map(|b| match b {
        B::Bool(v) => v,
        B::Int(v) => v != 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[derive(Debug, PartialEq, Deserialize)]
    struct R {
        id: i64,
        code: String,
        #[serde(deserialize_with = "time")]
        at: DateTime<Utc>,
        #[serde(deserialize_with = "opt_bool")]
        flag: Option<bool>,
        note: Option<String>,
    }

    #[test]
    fn packed_rows_read_back_by_position_with_sqlite_times_and_booleans() {
        let rows: Vec<R> = unpack(Some(
            r#"[[9007199254740993,"A-1","2026-02-01T00:00:00+00:00",1,null],[2,"B","2026-02-01 08:30:00",null,"x"]]"#,
        ))
        .unwrap();
        assert_eq!(rows.len(), 2);
        // Beyond f64's exact integers: serde_json reads an i64 exactly.
        assert_eq!(rows[0].id, 9_007_199_254_740_993);
        assert_eq!(rows[0].at, Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(rows[0].flag, Some(true));
        assert_eq!(rows[1].at, Utc.with_ymd_and_hms(2026, 2, 1, 8, 30, 0).unwrap());
        assert_eq!(rows[1].flag, None);
        assert_eq!(rows[1].note.as_deref(), Some("x"));
        assert!(unpack::<R>(None).unwrap().is_empty());
        assert!(unpack::<R>(Some("[]")).unwrap().is_empty());
        let err = unpack::<R>(Some(r#"[[1,"A","yesterday",0,null]]"#)).unwrap_err();
        assert!(err.contains("not a stored time"), "{err}");
    }

    #[test]
    fn the_packed_form_names_each_column_by_position() {
        assert_eq!(
            packed_sql(&["a.id", "a.code"], "FROM accounts a ORDER BY a.id LIMIT $1"),
            "SELECT json_group_array(json_array(c0, c1)) FROM (SELECT a.id AS c0, a.code AS c1 FROM accounts a ORDER BY a.id LIMIT $1)"
        );
        assert_eq!(
            plain_sql(&["a.id", "a.code"], "FROM accounts a"),
            "SELECT a.id, a.code FROM accounts a"
        );
        // An alias is the row's field name for PostgreSQL; the packed form numbers columns.
        assert_eq!(
            packed_sql(&["CAST(SUM(q) AS BIGINT) AS q", "CAST(n AS TEXT)"], "FROM t"),
            "SELECT json_group_array(json_array(c0, c1)) FROM (SELECT CAST(SUM(q) AS BIGINT) AS c0, CAST(n AS TEXT) AS c1 FROM t)"
        );
    }
}
