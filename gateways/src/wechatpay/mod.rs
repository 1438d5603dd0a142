//! wechatpay: see the folder's files.
