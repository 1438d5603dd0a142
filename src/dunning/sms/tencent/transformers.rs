//! Tencent Cloud SMS 2021-01-11 wire data: SendSms and PullSmsSendStatusByPhoneNumber bodies
//! and answers, and the error codes with their retry class.

use serde::{Deserialize, Serialize};

use crate::dunning::sms::Retry;

/// SendSms request body. Field order is the serialisation order; the exact bytes are signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendSmsRequest {
    #[serde(rename = "PhoneNumberSet")]
    pub phone_number_set: Vec<String>,
    #[serde(rename = "SmsSdkAppId")]
    pub sms_sdk_app_id: String,
    #[serde(rename = "TemplateId")]
    pub template_id: String,
    #[serde(rename = "SignName", default)]
    pub sign_name: String,
    #[serde(rename = "TemplateParamSet", default)]
    pub template_param_set: Vec<String>,
    #[serde(rename = "SessionContext", default, skip_serializing_if = "Option::is_none")]
    pub session_context: Option<String>,
}

/// PullSmsSendStatusByPhoneNumber request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullByPhoneRequest {
    #[serde(rename = "BeginTime")]
    pub begin_time: i64,
    #[serde(rename = "Offset")]
    pub offset: i64,
    #[serde(rename = "Limit")]
    pub limit: i64,
    #[serde(rename = "PhoneNumber")]
    pub phone_number: String,
    #[serde(rename = "SmsSdkAppId")]
    pub sms_sdk_app_id: String,
    #[serde(rename = "EndTime", default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
}

/// `{"Response": {...}}`, the envelope of every API 3.0 answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "Response")]
    pub response: ResponseBody,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResponseBody {
    #[serde(rename = "Error", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    #[serde(rename = "SendStatusSet", default, skip_serializing_if = "Option::is_none")]
    pub send_status_set: Option<Vec<SendStatus>>,
    #[serde(rename = "PullSmsSendStatusSet", default, skip_serializing_if = "Option::is_none")]
    pub pull_status_set: Option<Vec<PullStatus>>,
    #[serde(rename = "RequestId", default)]
    pub request_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
}

/// One number's result in SendSms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendStatus {
    #[serde(rename = "SerialNo", default)]
    pub serial_no: String,
    #[serde(rename = "PhoneNumber", default)]
    pub phone_number: String,
    #[serde(rename = "Fee", default)]
    pub fee: i64,
    #[serde(rename = "SessionContext", default)]
    pub session_context: String,
    /// `"Ok"` on success.
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message", default)]
    pub message: String,
    #[serde(rename = "IsoCode", default)]
    pub iso_code: String,
}

/// One delivery report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullStatus {
    #[serde(rename = "UserReceiveTime", default)]
    pub user_receive_time: Option<i64>,
    #[serde(rename = "CountryCode", default)]
    pub country_code: String,
    #[serde(rename = "SubscriberNumber", default)]
    pub subscriber_number: String,
    #[serde(rename = "PhoneNumber", default)]
    pub phone_number: String,
    #[serde(rename = "SerialNo", default)]
    pub serial_no: String,
    /// `SUCCESS` or `FAIL`.
    #[serde(rename = "ReportStatus")]
    pub report_status: String,
    #[serde(rename = "Description", default)]
    pub description: String,
    #[serde(rename = "SessionContext", default)]
    pub session_context: String,
}

/// The error codes we act on; unlisted codes are classed by their family (`LimitExceeded`,
/// `InternalError`, `RequestLimitExceeded` transient; `InvalidParameter*`, `FailedOperation`,
/// `UnauthorizedOperation`, `AuthFailure` permanent) and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Ok,
    RequestLimitExceeded,
    PhoneNumberDailyLimit,
    PhoneNumberThirtySecondLimit,
    PhoneNumberOneHourLimit,
    PhoneNumberSameContentDailyLimit,
    DailyLimit,
    DeliveryFrequencyLimit,
    InsufficientBalance,
    InternalTimeout,
    InternalError,
    SignatureExpire,
    IncorrectPhoneNumber,
    PhoneNumberInBlacklist,
    TemplateIncorrectOrUnapproved,
    TemplateUnapprovedOrNotExist,
    TemplateParamSetNotMatch,
    SignatureIncorrectOrUnapproved,
    ContainSensitiveWord,
    ProhibitedUrlInParameter,
    ParameterLengthLimit,
    SignatureFailure,
    SecretIdNotFound,
    SdkAppIdVerifyFail,
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "Ok" => ErrorCode::Ok,
            "RequestLimitExceeded" => ErrorCode::RequestLimitExceeded,
            "LimitExceeded.PhoneNumberDailyLimit" => ErrorCode::PhoneNumberDailyLimit,
            "LimitExceeded.PhoneNumberThirtySecondLimit" => ErrorCode::PhoneNumberThirtySecondLimit,
            "LimitExceeded.PhoneNumberOneHourLimit" => ErrorCode::PhoneNumberOneHourLimit,
            "LimitExceeded.PhoneNumberSameContentDailyLimit" => ErrorCode::PhoneNumberSameContentDailyLimit,
            "LimitExceeded.DailyLimit" => ErrorCode::DailyLimit,
            "LimitExceeded.DeliveryFrequencyLimit" => ErrorCode::DeliveryFrequencyLimit,
            "FailedOperation.InsufficientBalanceInSmsPackage" => ErrorCode::InsufficientBalance,
            "InternalError.Timeout" => ErrorCode::InternalTimeout,
            "InternalError" => ErrorCode::InternalError,
            "AuthFailure.SignatureExpire" => ErrorCode::SignatureExpire,
            "InvalidParameterValue.IncorrectPhoneNumber" => ErrorCode::IncorrectPhoneNumber,
            "FailedOperation.PhoneNumberInBlacklist" => ErrorCode::PhoneNumberInBlacklist,
            "FailedOperation.TemplateIncorrectOrUnapproved" => ErrorCode::TemplateIncorrectOrUnapproved,
            "FailedOperation.TemplateUnapprovedOrNotExist" => ErrorCode::TemplateUnapprovedOrNotExist,
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate" => ErrorCode::TemplateParamSetNotMatch,
            "FailedOperation.SignatureIncorrectOrUnapproved" => ErrorCode::SignatureIncorrectOrUnapproved,
            "FailedOperation.ContainSensitiveWord" => ErrorCode::ContainSensitiveWord,
            "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter" => ErrorCode::ProhibitedUrlInParameter,
            "InvalidParameterValue.TemplateParameterLengthLimit" => ErrorCode::ParameterLengthLimit,
            "AuthFailure.SignatureFailure" => ErrorCode::SignatureFailure,
            "AuthFailure.SecretIdNotFound" => ErrorCode::SecretIdNotFound,
            "UnauthorizedOperation.SmsSdkAppIdVerifyFail" => ErrorCode::SdkAppIdVerifyFail,
            other => ErrorCode::Other(other.to_string()),
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            ErrorCode::RequestLimitExceeded
            | ErrorCode::PhoneNumberDailyLimit
            | ErrorCode::PhoneNumberThirtySecondLimit
            | ErrorCode::PhoneNumberOneHourLimit
            | ErrorCode::PhoneNumberSameContentDailyLimit
            | ErrorCode::DailyLimit
            | ErrorCode::DeliveryFrequencyLimit
            | ErrorCode::InsufficientBalance
            | ErrorCode::InternalTimeout
            | ErrorCode::InternalError
            | ErrorCode::SignatureExpire => Retry::Transient,
            ErrorCode::Ok
            | ErrorCode::IncorrectPhoneNumber
            | ErrorCode::PhoneNumberInBlacklist
            | ErrorCode::TemplateIncorrectOrUnapproved
            | ErrorCode::TemplateUnapprovedOrNotExist
            | ErrorCode::TemplateParamSetNotMatch
            | ErrorCode::SignatureIncorrectOrUnapproved
            | ErrorCode::ContainSensitiveWord
            | ErrorCode::ProhibitedUrlInParameter
            | ErrorCode::ParameterLengthLimit
            | ErrorCode::SignatureFailure
            | ErrorCode::SecretIdNotFound
            | ErrorCode::SdkAppIdVerifyFail => Retry::Permanent,
            ErrorCode::Other(code) => {
                let family = code.split('.').next().unwrap_or_default();
                match family {
                    "LimitExceeded" | "InternalError" | "RequestLimitExceeded" | "ResourceUnavailable" => {
                        Retry::Transient
                    }
                    _ => Retry::Permanent,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_retried_and_a_bad_number_or_template_is_not() {
        assert_eq!(ErrorCode::parse("RequestLimitExceeded").retry(), Retry::Transient);
        assert_eq!(
            ErrorCode::parse("LimitExceeded.PhoneNumberDailyLimit").retry(),
            Retry::Transient
        );
        assert_eq!(ErrorCode::parse("InternalError.SomethingNew").retry(), Retry::Transient);
        assert_eq!(
            ErrorCode::parse("InvalidParameterValue.IncorrectPhoneNumber").retry(),
            Retry::Permanent
        );
        assert_eq!(
            ErrorCode::parse("FailedOperation.TemplateIncorrectOrUnapproved").retry(),
            Retry::Permanent
        );
        assert_eq!(
            ErrorCode::parse("AuthFailure.SignatureFailure").retry(),
            Retry::Permanent
        );
        assert_eq!(
            ErrorCode::parse("FailedOperation.SomethingNew").retry(),
            Retry::Permanent
        );
    }

    #[test]
    fn the_send_body_serialises_in_the_documented_field_order() {
        let r = SendSmsRequest {
            phone_number_set: vec!["+8613800138000".into()],
            sms_sdk_app_id: "1400006666".into(),
            template_id: "1110".into(),
            sign_name: "腾讯云".into(),
            template_param_set: vec!["128.50".into()],
            session_context: None,
        };
        // The T4 vector's body, byte for byte.
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400006666","TemplateId":"1110","SignName":"腾讯云","TemplateParamSet":["128.50"]}"#
        );
    }
}
