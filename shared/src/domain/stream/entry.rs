//! The entry a viewer is sent of a user (DESIGN §12): exactly the bulk
//! read's entry for that viewer ([`ReadModel::view_for`], the one function
//! of the read path, §4 property 4, §7.1), plus `next`, the entry the
//! viewer reads from `next.at_ms` on if no event comes first.

use serde::Serialize;

use crate::domain::audience::ViewerClass;
use crate::domain::ids::{Millis, UserId};
use crate::domain::manual::ManualStatus;
use crate::domain::platform::Platforms;
use crate::domain::read_model::ReadModel;
use crate::domain::status::Rules;
use crate::domain::view::View;

/// What the viewer reads from `at_ms` on, unless an event comes first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Next {
    /// Epoch ms: the first instant the view differs from the current one.
    pub at_ms: Millis,
    pub view: View,
}

/// One user's entry for one viewer at one `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub user_id: UserId,
    /// The bulk read's view for this viewer at `now`.
    pub view: View,
    /// `None` when the passing of time alone changes nothing.
    pub next: Option<Next>,
}

impl Entry {
    /// `model`'s entry at `now` for a viewer who is the user (`is_self`) or
    /// not.
    pub fn of(user_id: UserId, model: &ReadModel, is_self: bool, now: Millis, rules: &Rules) -> Self {
        let view = model.view_for(is_self, now, rules);
        let next = next_change(model, &view, is_self, now, rules);
        Self { user_id, view, next }
    }

    /// `model`'s entry at `now` for a viewer of class `viewer`, `allowed`
    /// or not by the user's audience (DESIGN §13,
    /// [`crate::domain::AudienceRule::allows`]): the bulk read's entry for
    /// that viewer. A left-out viewer's entry changes by itself only when
    /// its coarse `last_seen` moves to the next bucket, which is its
    /// `next`.
    pub fn for_viewer(
        user_id: UserId,
        model: &ReadModel,
        viewer: ViewerClass,
        allowed: bool,
        now: Millis,
        rules: &Rules,
    ) -> Self {
        let is_self = viewer == ViewerClass::Itself;
        if allowed || is_self {
            return Self::of(user_id, model, is_self, now, rules);
        }
        let rule = model.audience;
        // What an allowed viewer reads; its `last_active_ms` moves only
        // with a new event, never with time.
        let shown = model.view_for(false, now, rules);
        let next = rule
            .left_out_change_after(&shown, now)
            .map(|at_ms| Next { at_ms, view: rule.entry(false, model.view_for(false, at_ms, rules), at_ms) });
        Self { user_id, view: rule.entry(false, shown, now), next }
    }

    /// The entry's JSON: the bulk read's fields (`user_id`, `status`,
    /// `last_active_ms`, `manual` and `platforms` when shown, §7, §7.1) and
    /// `next` (`null`, or the same fields but `user_id`, with `at_ms`).
    pub fn to_json(&self) -> String {
        let body = EntryBody {
            user_id: self.user_id,
            fields: Fields::of(&self.view),
            next: self.next.as_ref().map(|next| NextBody { fields: Fields::of(&next.view), at_ms: next.at_ms }),
        };
        // Plain structs with string keys: serialization cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// A 64-bit digest of [`Entry::to_json`] (FNV-1a): two entries with the
    /// same digest are taken as the same. Stable across releases, since the
    /// registry keeps it while a cursor may be resumed.
    pub fn digest(&self) -> u64 {
        digest(self.to_json().as_bytes())
    }

    /// A 64-bit digest (FNV-1a) of what an activity leaves as it was: the
    /// status, `manual` and `platforms`, without `last_active_ms` and
    /// `next` (DESIGN §12 "Activity of an online user"). Stable across
    /// releases, as [`Entry::digest`].
    pub fn shape(&self) -> u64 {
        let mut fields = Fields::of(&self.view);
        fields.last_active_ms = None;
        // A plain struct with string keys: serialization cannot fail.
        digest(serde_json::to_string(&fields).unwrap_or_default().as_bytes())
    }

    /// Whether the entry shows the user online.
    pub fn is_online(&self) -> bool {
        self.view.status == crate::domain::status::Status::Online
    }
}

/// FNV-1a, 64 bits.
pub fn digest(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The first instant after `now` at which `model`'s view for this viewer
/// differs from `current`, and the view from then on. The view changes
/// only where one of its time comparisons flips (DESIGN §4, §7.1): a
/// session passing `SESSION_TTL` (`seen + TTL + 1`), an activity passing
/// `IDLE_AFTER` (`active + IDLE_AFTER + 1`, the user's and each session's
/// for its platform), the offline grace ending (`ended + OFFLINE_GRACE`),
/// a manual status expiring (`expires_at_ms`). Between two of these it is
/// constant, so trying each in order finds the exact instant.
pub fn next_change(model: &ReadModel, current: &View, is_self: bool, now: Millis, rules: &Rules) -> Option<Next> {
    let mut candidates: Vec<Millis> = Vec::with_capacity(model.connections.len() * 4 + 4);
    let after = |t: Millis, by: i64| t.saturating_add(by).saturating_add(1);
    for connection in &model.connections {
        let end = after(connection.seen_ms, rules.session_ttl_ms);
        candidates.push(end);
        candidates.push(end.saturating_add(rules.offline_grace_ms));
        if let Some(active) = connection.active_ms {
            candidates.push(after(active, rules.idle_after_ms));
        }
    }
    if let Some(active) = model.last_active_ms {
        candidates.push(after(active, rules.idle_after_ms));
    }
    if let Some(tombstone) = model.newest_tombstone {
        candidates.push(tombstone.saturating_add(rules.offline_grace_ms));
    }
    if let Some(expires) = model.manual.as_ref().and_then(|m| m.expires_at_ms) {
        candidates.push(expires);
    }
    candidates.retain(|t| *t > now);
    candidates.sort_unstable();
    candidates.dedup();
    candidates.into_iter().find_map(|at_ms| {
        let view = model.view_for(is_self, at_ms, rules);
        (view != *current).then_some(Next { at_ms, view })
    })
}

#[derive(Serialize)]
struct Fields<'a> {
    status: &'static str,
    last_active_ms: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manual: Option<&'a ManualStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platforms: Option<PlatformsBody>,
    /// DESIGN §13; absent, as before audiences, for everyone but a viewer
    /// left out of a `coarse` audience, so digests of other entries stay
    /// what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<&'static str>,
}

impl<'a> Fields<'a> {
    fn of(view: &'a View) -> Self {
        Self {
            status: view.status.as_str(),
            last_active_ms: view.last_active_ms,
            manual: view.manual.as_ref(),
            platforms: view.platforms.map(PlatformsBody),
            last_seen: view.last_seen.map(crate::domain::LastSeen::as_str),
        }
    }
}

#[derive(Serialize)]
struct EntryBody<'a> {
    user_id: UserId,
    #[serde(flatten)]
    fields: Fields<'a>,
    next: Option<NextBody<'a>>,
}

#[derive(Serialize)]
struct NextBody<'a> {
    #[serde(flatten)]
    fields: Fields<'a>,
    at_ms: Millis,
}

/// `{"mobile": "online", "web": "idle"}`: only platforms with a live
/// session, as on the bulk read (§7.1).
struct PlatformsBody(Platforms);

impl Serialize for PlatformsBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.live().map(|(platform, status)| (platform.as_str(), status.as_str())))
    }
}
