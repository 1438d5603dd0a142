//! Dysmsapi 2017-05-25 wire data: the JSON answers of SendSms and QuerySendDetails, and the
//! error codes with their retry class.

use serde::{Deserialize, Serialize};

use crate::dunning::sms::Retry;

/// The answer to any Dysmsapi call (`Format=JSON`); API errors and gateway errors (signature,
/// throttling) share the `Code`/`Message` pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiAnswer {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
    #[serde(rename = "RequestId", default)]
    pub request_id: Option<String>,
    #[serde(rename = "BizId", default, skip_serializing_if = "Option::is_none")]
    pub biz_id: Option<String>,
    #[serde(rename = "TotalCount", default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<i64>,
    #[serde(rename = "SmsSendDetailDTOs", default, skip_serializing_if = "Option::is_none")]
    pub details: Option<SendDetails>,
    #[serde(rename = "HostId", default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    #[serde(rename = "Recommend", default, skip_serializing_if = "Option::is_none")]
    pub recommend: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendDetails {
    #[serde(rename = "SmsSendDetailDTO", default)]
    pub items: Vec<SendDetail>,
}

/// One row of QuerySendDetails.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendDetail {
    #[serde(rename = "PhoneNum")]
    pub phone_num: String,
    /// 1 waiting for the receipt, 2 failed, 3 delivered.
    #[serde(rename = "SendStatus")]
    pub send_status: i64,
    #[serde(rename = "ErrCode", default)]
    pub err_code: String,
    #[serde(rename = "TemplateCode", default)]
    pub template_code: String,
    #[serde(rename = "Content", default)]
    pub content: String,
    #[serde(rename = "SendDate", default)]
    pub send_date: String,
    #[serde(rename = "ReceiveDate", default)]
    pub receive_date: String,
    #[serde(rename = "OutId", default)]
    pub out_id: String,
}

/// The error codes we act on. Codes not listed are classed by prefix (`isp.` is the
/// platform's side: transient; `isv.` is ours: permanent) and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Ok,
    // transient: flow control, the platform busy, balance, time and nonce of this request
    BusinessLimitControl,
    DayLimitControl,
    ThrottlingUser,
    Throttling,
    SystemError,
    ServiceUnavailable,
    AmountNotEnough,
    TimestampExpired,
    SignatureNonceUsed,
    // permanent: this number, this template, this signature, these credentials
    MobileNumberIllegal,
    MobileCountOverLimit,
    TemplateIllegal,
    TemplateMissingParameters,
    TemplateParamsIllegal,
    ParamLengthLimit,
    ParamNotSupportUrl,
    InvalidJsonParam,
    SignatureIllegal,
    SignNameIllegal,
    ContentIllegal,
    BlackKeyControlLimit,
    InvalidParameters,
    SignatureDoesNotMatch,
    InvalidAccessKeyIdNotFound,
    RamPermissionDeny,
    OutOfService,
    ProductUnsubscribed,
    AccountAbnormal,
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "OK" => ErrorCode::Ok,
            "isv.BUSINESS_LIMIT_CONTROL" => ErrorCode::BusinessLimitControl,
            "isv.DAY_LIMIT_CONTROL" => ErrorCode::DayLimitControl,
            "Throttling.User" => ErrorCode::ThrottlingUser,
            "Throttling" => ErrorCode::Throttling,
            "isp.SYSTEM_ERROR" => ErrorCode::SystemError,
            "ServiceUnavailable" => ErrorCode::ServiceUnavailable,
            "isv.AMOUNT_NOT_ENOUGH" => ErrorCode::AmountNotEnough,
            "InvalidTimeStamp.Expired" => ErrorCode::TimestampExpired,
            "SignatureNonceUsed" => ErrorCode::SignatureNonceUsed,
            "isv.MOBILE_NUMBER_ILLEGAL" => ErrorCode::MobileNumberIllegal,
            "isv.MOBILE_COUNT_OVER_LIMIT" => ErrorCode::MobileCountOverLimit,
            "isv.SMS_TEMPLATE_ILLEGAL" => ErrorCode::TemplateIllegal,
            "isv.TEMPLATE_MISSING_PARAMETERS" => ErrorCode::TemplateMissingParameters,
            "isv.TEMPLATE_PARAMS_ILLEGAL" => ErrorCode::TemplateParamsIllegal,
            "isv.PARAM_LENGTH_LIMIT" => ErrorCode::ParamLengthLimit,
            "isv.PARAM_NOT_SUPPORT_URL" => ErrorCode::ParamNotSupportUrl,
            "isv.INVALID_JSON_PARAM" => ErrorCode::InvalidJsonParam,
            "isv.SMS_SIGNATURE_ILLEGAL" => ErrorCode::SignatureIllegal,
            "isv.SMS_SIGN_ILLEGAL" => ErrorCode::SignNameIllegal,
            "isv.SMS_CONTENT_ILLEGAL" => ErrorCode::ContentIllegal,
            "isv.BLACK_KEY_CONTROL_LIMIT" => ErrorCode::BlackKeyControlLimit,
            "isv.INVALID_PARAMETERS" => ErrorCode::InvalidParameters,
            "SignatureDoesNotMatch" => ErrorCode::SignatureDoesNotMatch,
            "InvalidAccessKeyId.NotFound" => ErrorCode::InvalidAccessKeyIdNotFound,
            "isp.RAM_PERMISSION_DENY" => ErrorCode::RamPermissionDeny,
            "isv.OUT_OF_SERVICE" => ErrorCode::OutOfService,
            "isv.PRODUCT_UN_SUBSCRIPT" => ErrorCode::ProductUnsubscribed,
            "isv.ACCOUNT_ABNORMAL" => ErrorCode::AccountAbnormal,
            other => ErrorCode::Other(other.to_string()),
        }
    }

    /// Retry or not. `Ok` is not an error and is never asked about; it is classed permanent so
    /// that a caller that does ask cannot loop.
    pub fn retry(&self) -> Retry {
        match self {
            ErrorCode::BusinessLimitControl
            | ErrorCode::DayLimitControl
            | ErrorCode::ThrottlingUser
            | ErrorCode::Throttling
            | ErrorCode::SystemError
            | ErrorCode::ServiceUnavailable
            | ErrorCode::AmountNotEnough
            | ErrorCode::TimestampExpired
            | ErrorCode::SignatureNonceUsed => Retry::Transient,
            ErrorCode::Ok
            | ErrorCode::MobileNumberIllegal
            | ErrorCode::MobileCountOverLimit
            | ErrorCode::TemplateIllegal
            | ErrorCode::TemplateMissingParameters
            | ErrorCode::TemplateParamsIllegal
            | ErrorCode::ParamLengthLimit
            | ErrorCode::ParamNotSupportUrl
            | ErrorCode::InvalidJsonParam
            | ErrorCode::SignatureIllegal
            | ErrorCode::SignNameIllegal
            | ErrorCode::ContentIllegal
            | ErrorCode::BlackKeyControlLimit
            | ErrorCode::InvalidParameters
            | ErrorCode::SignatureDoesNotMatch
            | ErrorCode::InvalidAccessKeyIdNotFound
            | ErrorCode::RamPermissionDeny
            | ErrorCode::OutOfService
            | ErrorCode::ProductUnsubscribed
            | ErrorCode::AccountAbnormal => Retry::Permanent,
            ErrorCode::Other(code) => {
                if code.starts_with("isv.") {
                    Retry::Permanent
                } else {
                    Retry::Transient
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_control_is_retried_and_a_bad_number_or_template_is_not() {
        assert_eq!(ErrorCode::parse("isv.BUSINESS_LIMIT_CONTROL").retry(), Retry::Transient);
        assert_eq!(ErrorCode::parse("Throttling.User").retry(), Retry::Transient);
        assert_eq!(ErrorCode::parse("isp.SYSTEM_ERROR").retry(), Retry::Transient);
        assert_eq!(ErrorCode::parse("isv.MOBILE_NUMBER_ILLEGAL").retry(), Retry::Permanent);
        assert_eq!(ErrorCode::parse("isv.SMS_TEMPLATE_ILLEGAL").retry(), Retry::Permanent);
        assert_eq!(ErrorCode::parse("SignatureDoesNotMatch").retry(), Retry::Permanent);
        assert_eq!(ErrorCode::parse("isv.SOMETHING_NEW").retry(), Retry::Permanent);
        assert_eq!(ErrorCode::parse("isp.SOMETHING_NEW").retry(), Retry::Transient);
    }

    #[test]
    fn a_query_answer_parses() {
        let json = r#"{"Code":"OK","Message":"OK","RequestId":"r1","TotalCount":1,
            "SmsSendDetailDTOs":{"SmsSendDetailDTO":[{"PhoneNum":"13800138000","SendStatus":3,
            "ErrCode":"DELIVERED","TemplateCode":"SMS_1","Content":"x","SendDate":"2024-01-01 08:00:00",
            "ReceiveDate":"2024-01-01 08:00:03","OutId":"42"}]}}"#;
        let a: ApiAnswer = serde_json::from_str(json).unwrap();
        let items = a.details.unwrap().items;
        assert_eq!(items[0].send_status, 3);
        assert_eq!(items[0].out_id, "42");
    }
}
