//! Audiences (DESIGN §13): who may see a user's presence, and what everyone
//! else reads instead. The one home of the viewer rule: every path (bulk,
//! single, public, the SQL fallback, the stream, the bus) asks
//! [`AudienceRule::allows`] and [`AudienceRule::entry`], or
//! [`entry_for`] with a whole [`Audience`], and restates nothing.
//!
//! Nothing here does I/O or reads a clock.

use std::fmt;
use std::str::FromStr;

use serde::ser::SerializeStruct;
use serde::Serialize;

use super::ids::{Millis, UserId};
use super::last_seen::LastSeen;
use super::view::View;

/// The most viewers one audience may list, counted as listed (duplicates
/// included), as the bulk route counts its ids (DESIGN §7, §13).
pub const MAX_EXCEPT: usize = 1_000;

/// Who sees the user when the except list does not name them: on the wire
/// `"everyone" | "nobody"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AudienceDefault {
    #[default]
    Everyone,
    Nobody,
}

impl AudienceDefault {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Everyone => "everyone",
            Self::Nobody => "nobody",
        }
    }
}

/// What viewers outside the audience learn of last seen: on the wire
/// `"none"` (nothing: they read the user as never seen) or `"coarse"` (a
/// [`LastSeen`] bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LastSeenRule {
    /// `"none"`, the default.
    #[default]
    Withheld,
    /// `"coarse"`.
    Coarse,
}

impl LastSeenRule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Withheld => "none",
            Self::Coarse => "coarse",
        }
    }
}

impl FromStr for AudienceDefault {
    type Err = AudienceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "everyone" => Ok(Self::Everyone),
            "nobody" => Ok(Self::Nobody),
            other => Err(AudienceError::UnknownDefault(other.to_owned())),
        }
    }
}

impl FromStr for LastSeenRule {
    type Err = AudienceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::Withheld),
            "coarse" => Ok(Self::Coarse),
            other => Err(AudienceError::UnknownLastSeen(other.to_owned())),
        }
    }
}

impl fmt::Display for AudienceDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for LastSeenRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an audience was refused (DESIGN §13: a 400 that changes nothing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    /// More than [`MAX_EXCEPT`] ids listed (the count as listed).
    #[error("except lists {0} ids; at most 1000 are allowed")]
    TooManyIds(usize),
    #[error("default {0:?} is not everyone or nobody")]
    UnknownDefault(String),
    #[error("last_seen {0:?} is not none or coarse")]
    UnknownLastSeen(String),
}

/// Who reads a user, as the rule tells viewers apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ViewerClass {
    /// The user themself: always allowed, and reads the truth.
    Itself,
    /// A service caller (IAM): never named by an except list.
    Service,
    /// The public route (one answer for everyone, cached by a CDN): never
    /// named by an except list.
    Public,
    /// Another end user, by id.
    User(UserId),
}

impl ViewerClass {
    /// The viewer an end user `reader` (`None`: a service) is to `target`.
    pub fn of(target: UserId, reader: Option<UserId>) -> ViewerClass {
        match reader {
            Some(reader) if reader == target => Self::Itself,
            Some(reader) => Self::User(reader),
            None => Self::Service,
        }
    }
}

/// A user's audience (DESIGN §13), valid by construction: `except` sorted
/// ascending with duplicates removed, at most [`MAX_EXCEPT`] ids.
///
/// Serialized as the contract's
/// `{"default": "everyone", "except": [3, 9], "last_seen": "none"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audience {
    default: AudienceDefault,
    except: Vec<UserId>,
    last_seen: LastSeenRule,
}

impl Audience {
    /// The audience of someone who never set one: everyone, nobody
    /// excepted, no coarse last seen.
    pub const EVERYONE: Audience =
        Audience { default: AudienceDefault::Everyone, except: Vec::new(), last_seen: LastSeenRule::Withheld };

    /// An audience from its parts. `listed` is counted as given, duplicates
    /// included, before they collapse (DESIGN §13). Errors:
    /// [`AudienceError::TooManyIds`].
    pub fn new(
        default: AudienceDefault,
        listed: impl IntoIterator<Item = UserId>,
        last_seen: LastSeenRule,
    ) -> Result<Self, AudienceError> {
        let mut except: Vec<UserId> = listed.into_iter().collect();
        if except.len() > MAX_EXCEPT {
            return Err(AudienceError::TooManyIds(except.len()));
        }
        except.sort_unstable();
        except.dedup();
        Ok(Self { default, except, last_seen })
    }

    pub fn default_audience(&self) -> AudienceDefault {
        self.default
    }

    /// The listed viewers, ascending, each once.
    pub fn except(&self) -> &[UserId] {
        &self.except
    }

    pub fn last_seen(&self) -> LastSeenRule {
        self.last_seen
    }

    /// Whether the except list names `viewer`. Services and the public
    /// route are never named; nor is the user themself (it would not
    /// matter: they are always allowed).
    pub fn lists(&self, viewer: ViewerClass) -> bool {
        match viewer {
            ViewerClass::User(id) => self.except.binary_search(&id).is_ok(),
            ViewerClass::Itself | ViewerClass::Service | ViewerClass::Public => false,
        }
    }

    /// What the stored record keeps of this audience, its list (if anyone
    /// is listed) stored under `tag`.
    pub fn rule(&self, tag: ListTag) -> AudienceRule {
        let list = (!self.except.is_empty()).then_some(tag);
        AudienceRule { default: self.default, last_seen: self.last_seen, list }
    }

    /// Whether `viewer` is in the audience.
    pub fn allows(&self, viewer: ViewerClass) -> bool {
        self.rule(ListTag(0)).allows(viewer, self.lists(viewer))
    }
}

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut body = serializer.serialize_struct("Audience", 3)?;
        body.serialize_field("default", self.default.as_str())?;
        body.serialize_field("except", &self.except)?;
        body.serialize_field("last_seen", self.last_seen.as_str())?;
        body.end()
    }
}

/// An audience without its list: what every path knows of a user's
/// audience before it asks whether the list names a viewer, and all it
/// ever needs for the user themself, services, the public route, and any
/// viewer when nobody is listed. The record carries it, so a user who
/// never set an audience costs nothing more to read ([`AudienceRule::EVERYONE`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AudienceRule {
    pub default: AudienceDefault,
    pub last_seen: LastSeenRule,
    /// The stored except list, when it names anyone.
    pub list: Option<ListTag>,
}

/// Names one stored except list of a user (a random number drawn when the
/// audience is set). The record holds the tag of its list, and every copy
/// of a list carries its tag, so a reader never takes one audience's list
/// for another's: a copy under another tag is stale and is read again from
/// the durable store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListTag(pub u64);

impl AudienceRule {
    /// Everyone, nobody listed, nothing coarse: the rule of a user who
    /// never set an audience. It allows every viewer.
    pub const EVERYONE: AudienceRule =
        AudienceRule { default: AudienceDefault::Everyone, last_seen: LastSeenRule::Withheld, list: None };

    /// The rule a damaged stored rule reads as (DESIGN §6: damage fails
    /// only its own user, and here it fails closed): nobody but the user,
    /// nothing coarse.
    pub const NOBODY: AudienceRule =
        AudienceRule { default: AudienceDefault::Nobody, last_seen: LastSeenRule::Withheld, list: None };

    /// Whether the except list names anyone.
    pub fn lists_anyone(&self) -> bool {
        self.list.is_some()
    }

    /// The viewer whose place on the except list decides, if the list can
    /// matter for `viewer`: an end user other than the user, while anyone
    /// is listed. Every other case is decided by the rule alone, so the
    /// list is looked up only for these.
    pub fn asks_about(&self, viewer: ViewerClass) -> Option<UserId> {
        match viewer {
            ViewerClass::User(id) if self.lists_anyone() => Some(id),
            _ => None,
        }
    }

    /// Whether `viewer` is allowed, `listed` saying whether the except list
    /// names them (ignored where [`AudienceRule::asks_about`] is `None`):
    /// the user always; with default `everyone` those not listed; with
    /// `nobody` those listed. Services and the public route are never
    /// listed (DESIGN §13).
    pub fn allows(&self, viewer: ViewerClass, listed: bool) -> bool {
        let listed = match viewer {
            ViewerClass::Itself => return true,
            ViewerClass::Service | ViewerClass::Public => false,
            ViewerClass::User(_) => listed && self.lists_anyone(),
        };
        match self.default {
            AudienceDefault::Everyone => !listed,
            AudienceDefault::Nobody => listed,
        }
    }

    /// The entry a viewer reads at `now`, given whether they are
    /// `allowed` and `entry`, the one an allowed viewer of the same kind
    /// reads (for the user themself the truth; for anyone else the view
    /// after appear-offline, DESIGN §4 property 4, §7.1). An allowed viewer
    /// gets `entry` unchanged. Anyone else reads the user as never seen
    /// (`offline`, no `last_active_ms`, `manual` or `platforms`) and, under
    /// `coarse`, the [`LastSeen`] bucket at `now` of `entry`'s
    /// `last_active_ms` when it has one: a left-out viewer never learns
    /// more than an allowed one, and while the user appears offline the
    /// bucket is that of the frozen value.
    pub fn entry(&self, allowed: bool, entry: View, now: Millis) -> View {
        if allowed {
            return entry;
        }
        let last_seen = match self.last_seen {
            LastSeenRule::Coarse => entry.last_active_ms.map(|active| LastSeen::of(active, now)),
            LastSeenRule::Withheld => None,
        };
        View { last_seen, ..View::UNKNOWN }
    }

    /// The first instant after `now` at which the entry a left-out viewer
    /// reads changes without any event: its bucket's edge, under `coarse`.
    /// `None` when it never changes by itself.
    pub fn left_out_change_after(&self, entry: &View, now: Millis) -> Option<Millis> {
        match (self.last_seen, entry.last_active_ms) {
            (LastSeenRule::Coarse, Some(active)) => LastSeen::next_change_after(active, now),
            _ => None,
        }
    }
}

/// The entry `viewer` reads of a user with `audience` at `now`, where
/// `entry` is the one an allowed viewer of the same kind reads (see
/// [`AudienceRule::entry`]).
pub fn entry_for(audience: &Audience, viewer: ViewerClass, entry: View, now: Millis) -> View {
    audience.rule(ListTag(0)).entry(audience.allows(viewer), entry, now)
}

#[cfg(test)]
mod tests;
