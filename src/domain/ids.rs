//! Small closed vocabularies shared by every step: utilities and payment channels.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a meter measures and a bill line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Utility {
    Electricity,
    Water,
}

impl Utility {
    pub const ALL: [Utility; 2] = [Utility::Electricity, Utility::Water];
    pub fn as_str(self) -> &'static str {
        match self {
            Utility::Electricity => "electricity",
            Utility::Water => "water",
        }
    }
}

impl fmt::Display for Utility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Utility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "electricity" | "elec" => Ok(Utility::Electricity),
            "water" => Ok(Utility::Water),
            other => Err(format!("unknown utility {other:?} (expected electricity or water)")),
        }
    }
}

/// A payment gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Alipay,
    Wechatpay,
    Unionpay,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Alipay, Channel::Wechatpay, Channel::Unionpay];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Alipay => "alipay",
            Channel::Wechatpay => "wechatpay",
            Channel::Unionpay => "unionpay",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alipay" => Ok(Channel::Alipay),
            "wechatpay" | "wechat" => Ok(Channel::Wechatpay),
            "unionpay" => Ok(Channel::Unionpay),
            other => Err(format!(
                "unknown channel {other:?} (expected alipay, wechatpay or unionpay)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for u in Utility::ALL {
            assert_eq!(u.as_str().parse::<Utility>(), Ok(u));
        }
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>(), Ok(c));
        }
        assert!("gas".parse::<Utility>().is_err());
    }
}
