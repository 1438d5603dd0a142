//! alipay: see the folder's files.
