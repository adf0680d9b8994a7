//! The answers of the HTTP API (DESIGN §7): each route matched by
//! [`crate::route`], its body checked by [`crate::body`], then read or
//! written through the services and answered. Every refusal is an
//! [`ApiError`] (one table of statuses and codes); nothing internal ever
//! reaches a body.

use serde_json::{json, Value};
use status_shared::app::{App, AppCache, AppDeadLetters, AppPollLimiter, AppRepairBuffer, AppStore, Feed, Publisher};
use status_shared::domain::{Millis, UserId, View};
use status_shared::ports::{
    CacheAudience, CacheErase, CacheRead, CacheViews, CacheWrite, ChangeFeed, ChangePublisher, DeadLetters, Outbox,
    PollLimiter, RepairBuffer, StoreAudience, StoreErase, StoreRead, StoreWrite,
};
use status_shared::services::{Committer, Reader};

use tracing::Instrument;

use crate::body::{parse_bulk, parse_manual, parse_visibility};
use crate::error::ApiError;
use crate::measures::note;
use crate::request::{ApiRequest, Caller};
use crate::response::{status_body, StatusBody};
use crate::route::{parse_user_id, route, Route};

pub use crate::response::{ApiResponse, MAX_BODY_BYTES, MAX_BULK_IDS};

/// The API over its ports.
pub struct StatusApi<C, S, W, R, P, F, L, D> {
    pub reader: Reader<C, S>,
    pub committer: Committer<C, W, R, P, F>,
    pub limiter: L,
    /// Where an erasure finds the user's dead letters (DESIGN §7.1).
    pub dead_letters: D,
}

/// The API as the function runs it, over the adapters of an [`App`].
pub type AppApi =
    StatusApi<AppCache, AppStore, AppStore, AppRepairBuffer, Publisher, Feed, AppPollLimiter, AppDeadLetters>;

impl AppApi {
    /// The one way to build the function's handler, from its started
    /// adapters and configuration: used by `main.rs`, the local stack, the
    /// benchmark and the integration tests.
    pub fn from_app(app: &App) -> Self {
        StatusApi {
            reader: app.reader(),
            committer: app.committer(),
            limiter: app.limiter.clone(),
            dead_letters: app.dead_letters.clone(),
        }
    }
}

impl<C, S, W, R, P, F, L, D> StatusApi<C, S, W, R, P, F, L, D>
where
    C: CacheRead + CacheViews + CacheWrite + CacheErase + CacheAudience,
    S: StoreRead + StoreAudience,
    W: StoreWrite + StoreErase + Outbox + StoreAudience,
    R: RepairBuffer,
    P: ChangePublisher,
    F: ChangeFeed,
    L: PollLimiter,
    D: DeadLetters,
{
    /// Answers one API Gateway HTTP API (payload v2) event at `now`. Never
    /// fails: an event that is not a request is a 400 in the error shape.
    /// The function's entry point is `AppApi::invoke`, which adds the
    /// span and the metrics.
    pub(crate) async fn answer_event(&self, event: &Value, now: Millis) -> ApiResponse {
        match ApiRequest::from_event(event) {
            Ok(request) => self.handle(&request, now).await,
            Err(error) => error.into(),
        }
    }

    /// Answers one request at `now`. Never fails: every problem is an
    /// answer.
    pub async fn handle(&self, request: &ApiRequest, now: Millis) -> ApiResponse {
        self.route(request, now).await.unwrap_or_else(ApiResponse::from)
    }

    async fn route(&self, request: &ApiRequest, now: Millis) -> Result<ApiResponse, ApiError> {
        let matched = tracing::info_span!("route").in_scope(|| route(&request.method, &request.path))?;
        // The public route takes no identity (API Gateway runs no authorizer
        // for it, and the CDN caches one answer for everyone), so a caller's
        // token, good or bad, must not change what it answers.
        if request.caller == Caller::BadSubject && !matches!(matched, Route::Public(_)) {
            return Err(ApiError::Unauthorized);
        }
        match matched {
            Route::Bulk => {
                let users = parse_bulk(&request.body)?;
                note(|m| m.bulk_size = Some(users.len()));
                self.check_poll(request.caller).await?;
                let views = self.read(&users, request.caller, now).await?;
                let statuses: Vec<StatusBody> = users.iter().zip(&views).map(|(u, v)| status_body(*u, v)).collect();
                Ok(ApiResponse::ok(json!({ "statuses": statuses })))
            }
            Route::Single(raw) => {
                let user = parse_user_id(&raw)?;
                self.check_poll(request.caller).await?;
                let views = self.read(&[user], request.caller, now).await?;
                Ok(ApiResponse::ok(json!(status_body(user, &views[0]))))
            }
            Route::Public(raw) => {
                let user = parse_user_id(&raw)?;
                // A CDN caches this answer for everyone: always the public
                // view, whoever asks.
                let views = self.read(&[user], Caller::Service, now).await?;
                Ok(ApiResponse::ok(json!(status_body(user, &views[0])))
                    .with_header("cache-control", "public, max-age=30".to_owned()))
            }
            Route::Visibility(raw) => {
                let user = parse_user_id(&raw)?;
                if let Caller::User(caller) = request.caller {
                    if caller != user {
                        return Err(ApiError::Forbidden("change their visibility"));
                    }
                }
                let visible = parse_visibility(&request.body)?;
                note(|m| m.wrote = true);
                let outcome = self.committer.set_visibility(user, visible, now).await.map_err(|error| {
                    tracing::error!(%error, %user, "visibility not saved");
                    ApiError::Unavailable
                })?;
                note(|m| m.commit(&outcome));
                Ok(ApiResponse::ok(json!({ "user_id": user, "visible": visible })))
            }
            Route::ManualStatus { id, clear } => {
                let user = parse_user_id(&id)?;
                if let Caller::User(caller) = request.caller {
                    if caller != user {
                        return Err(ApiError::Forbidden("change their manual status"));
                    }
                }
                let manual = if clear { None } else { Some(parse_manual(&request.body, now)?) };
                note(|m| m.wrote = true);
                let outcome = self.committer.set_manual(user, manual.clone(), now).await.map_err(|error| {
                    tracing::error!(%error, %user, "manual status not saved");
                    ApiError::Unavailable
                })?;
                note(|m| m.commit(&outcome));
                Ok(ApiResponse::ok(json!({ "user_id": user, "manual": manual })))
            }
            Route::Erase(raw) => {
                let user = parse_user_id(&raw)?;
                if request.caller != Caller::Service {
                    return Err(ApiError::ServiceOnly("erase a user"));
                }
                note(|m| m.wrote = true);
                let erased = self.committer.erase(user, now, &self.dead_letters).await.map_err(|error| {
                    tracing::error!(%error, %user, "erasure not finished; a retry completes it");
                    ApiError::Unavailable
                })?;
                note(|m| {
                    m.published += erased.published;
                    m.publish_failed |= erased.publish_failed;
                    m.feed_failed |= erased.feed_failed;
                    m.fed += erased.fed;
                });
                Ok(ApiResponse::no_content())
            }
            Route::Audience { id, put } => self.audience_route(&id, put, request, now).await,
        }
    }

    async fn read(&self, users: &[UserId], caller: Caller, now: Millis) -> Result<Vec<View>, ApiError> {
        let viewer = match caller {
            Caller::User(user) => Some(user),
            _ => None,
        };
        let read = self.reader.read_counted(users, viewer, now);
        let read = read
            .instrument(tracing::info_span!("read", users = users.len()))
            .await
            .map_err(|_| ApiError::Unavailable)?;
        note(|m| {
            m.hits += read.hits;
            m.fallbacks += read.fallbacks;
        });
        let (views, adopt) = (read.views, read.adopt);
        if !adopt.is_empty() {
            // A hide set in Redis's flag by someone else: make it durable so
            // a cache loss cannot undo it. The answer is right either way.
            note(|m| m.wrote = true);
            match self.committer.adopt_hides(&adopt, now).await {
                Ok(outcome) => note(|m| m.commit(&outcome)),
                Err(error) => {
                    tracing::warn!(%error, users = adopt.len(), "hide from the visibility flag not adopted into SQL yet")
                }
            }
        }
        Ok(views)
    }

    async fn check_poll(&self, caller: Caller) -> Result<(), ApiError> {
        let Caller::User(user) = caller else { return Ok(()) };
        match self.limiter.acquire(user).await {
            Ok(None) => Ok(()),
            Ok(Some(retry_after_s)) => Err(ApiError::RateLimited { retry_after_s }),
            Err(error) => {
                // Without Redis the limit cannot be counted; reads still come
                // from SQL, so let the caller through rather than fail them.
                tracing::warn!(%error, "poll limit not checked: redis unavailable");
                Ok(())
            }
        }
    }
}
