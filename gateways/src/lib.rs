//! meterpay-gateways: Alipay (`gateway.do`, RSA2), WeChat Pay API v3 and UnionPay online gateway
//! 5.1.0, spoken exactly.
//!
//! Layout (one folder per gateway, wire data apart from behaviour):
//! - [`gateway`]: the one interface the service uses for every gateway ([`gateway::PaymentGateway`])
//!   and the request/answer types in our terms.
//! - [`crypto`]: RSA keys in every form the gateways hand out; SHA256withRSA sign/verify.
//! - [`amount`]: fen inside, each gateway's unit only at its edge.
//! - [`settlement`]: the normalised row every settlement-file parser produces.
//! - [`alipay`], [`wechatpay`], [`unionpay`]: per gateway, request signing, response and
//!   notification verification, wire structs (`transformers.rs`), status mapping, error-code
//!   classification and the settlement-file parser.
//! - `sandbox` (feature `sandbox`): the server side of all three, for the demo and the tests.
//!
//! Nothing here touches a database or a web framework (the sandbox excepted, behind its feature):
//! gateway code turns our requests into HTTP exchanges and gateway bytes into our facts.

pub mod alipay;
pub mod amount;
pub mod crypto;
pub mod gateway;
pub mod outcome;
pub mod settlement;
pub mod tools;
pub mod unionpay;
pub mod wechatpay;

#[cfg(feature = "sandbox")]
pub mod sandbox;
