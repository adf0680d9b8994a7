//! The platforms of DESIGN §7.1 and the one mapping from an event's
//! `device` to a platform. Nothing else in the service names a device.

use serde::{Deserialize, Serialize};

use super::status::Status;

/// Where a session runs. The order (mobile < web < desktop) only breaks
/// ties deterministically when one session's events name different
/// platforms (see [`super::Session::join`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Platform {
    #[serde(rename = "m")]
    Mobile,
    #[serde(rename = "w")]
    Web,
    #[serde(rename = "d")]
    Desktop,
}

impl Platform {
    /// Every platform, in the order they are listed.
    pub const ALL: [Platform; 3] = [Self::Mobile, Self::Web, Self::Desktop];

    /// The platform of an event's `device` (DESIGN §7.1): `ios`, `android`,
    /// `mobile` → mobile; `web`, `browser` → web; `desktop`, `windows`,
    /// `macos`, `linux` → desktop; anything else, or no device, → none
    /// (the session still counts for `status`).
    pub fn of_device(device: Option<&str>) -> Option<Self> {
        match device? {
            "ios" | "android" | "mobile" => Some(Self::Mobile),
            "web" | "browser" => Some(Self::Web),
            "desktop" | "windows" | "macos" | "linux" => Some(Self::Desktop),
            _ => None,
        }
    }

    /// The one letter a platform is stored as, in the session JSON (its
    /// serde name) and in the read model's text: `m`, `w`, `d`.
    pub fn letter(self) -> u8 {
        match self {
            Self::Mobile => b'm',
            Self::Web => b'w',
            Self::Desktop => b'd',
        }
    }

    /// The platform stored as `letter` ([`Platform::letter`]), if any.
    pub fn of_letter(letter: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.letter() == letter)
    }

    /// The contract's name (`mobile`, `web`, `desktop`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::Web => "web",
            Self::Desktop => "desktop",
        }
    }
}

/// Each platform's status at a given time; `None` where the platform has
/// no live session (absent from the answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Platforms {
    pub mobile: Option<Status>,
    pub web: Option<Status>,
    pub desktop: Option<Status>,
}

impl Platforms {
    pub fn get(&self, platform: Platform) -> Option<Status> {
        match platform {
            Platform::Mobile => self.mobile,
            Platform::Web => self.web,
            Platform::Desktop => self.desktop,
        }
    }

    pub(crate) fn set(&mut self, platform: Platform, status: Option<Status>) {
        match platform {
            Platform::Mobile => self.mobile = status,
            Platform::Web => self.web = status,
            Platform::Desktop => self.desktop = status,
        }
    }

    /// `(platform, status)` for each platform with a live session.
    pub fn live(&self) -> impl Iterator<Item = (Platform, Status)> + '_ {
        Platform::ALL.into_iter().filter_map(|p| self.get(p).map(|s| (p, s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_map_to_the_contract_platforms() {
        for (device, platform) in [
            ("ios", Some(Platform::Mobile)),
            ("android", Some(Platform::Mobile)),
            ("mobile", Some(Platform::Mobile)),
            ("web", Some(Platform::Web)),
            ("browser", Some(Platform::Web)),
            ("desktop", Some(Platform::Desktop)),
            ("windows", Some(Platform::Desktop)),
            ("macos", Some(Platform::Desktop)),
            ("linux", Some(Platform::Desktop)),
            ("tv", None),
            ("IOS", None),
            ("", None),
        ] {
            assert_eq!(Platform::of_device(Some(device)), platform, "{device}");
        }
        assert_eq!(Platform::of_device(None), None);
    }

    #[test]
    fn a_platform_s_letter_is_its_name_in_the_session_json_and_reads_back() {
        for platform in Platform::ALL {
            let json = serde_json::to_string(&platform).unwrap();
            assert_eq!(json, format!("\"{}\"", char::from(platform.letter())));
            assert_eq!(Platform::of_letter(platform.letter()), Some(platform));
        }
        assert_eq!(Platform::of_letter(b'x'), None);
    }
}
