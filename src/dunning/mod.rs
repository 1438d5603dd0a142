//! Arrears reminders (dunning).
