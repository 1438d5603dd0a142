//! unionpay: see the folder's files.
