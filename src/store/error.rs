//! Storage errors. Named constraints and trigger messages become errors a caller can act on;
//! everything else is `Database` with a sentence saying what was being done.

use sqlx::error::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused a duplicate (`constraint` names it).
    #[error("{what}: already exists ({constraint})")]
    Duplicate { what: &'static str, constraint: String },
    /// A foreign key, check constraint or trigger refused the write.
    #[error("{what}: refused by the database: {reason}")]
    Refused { what: &'static str, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("applying migrations: {0}")]
    Migration(String),
    /// A callback write was gathered into a group commit whose transaction did not commit (or
    /// whose committer stopped before answering): not acknowledged, so the gateway delivers it
    /// again, and applying it again is safe.
    #[error("{what}: not committed: {reason}")]
    NotCommitted { what: &'static str, reason: String },
    #[error("{what}: {source}")]
    Database {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Classify an sqlx error raised while doing `what`.
    pub fn db(what: &'static str, err: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(dbe) = &err {
            let message = dbe.message().to_string();
            // Our triggers raise messages that start with a stable tag.
            for tag in [
                "journal_entry_unbalanced",
                "journal_entry_sealed",
                "journal_append_only",
                "audit_append_only",
                "bill_sealed",
                "bill_unbalanced",
                "bill_immutable",
                "tariff_version_immutable",
                "allocation_append_only",
                "late_fee_append_only",
                "recon_append_only",
            ] {
                if message.contains(tag) {
                    return StoreError::Refused { what, reason: message };
                }
            }
            match dbe.kind() {
                ErrorKind::UniqueViolation => {
                    let constraint = dbe.constraint().map(str::to_string).unwrap_or(message);
                    return StoreError::Duplicate { what, constraint };
                }
                ErrorKind::ForeignKeyViolation | ErrorKind::CheckViolation | ErrorKind::NotNullViolation => {
                    return StoreError::Refused { what, reason: message };
                }
                _ => {}
            }
        }
        StoreError::Database { what, source: err }
    }

    pub fn is_duplicate(&self) -> bool {
        matches!(self, StoreError::Duplicate { .. })
    }
}
