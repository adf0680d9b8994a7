//! The fakes of the AWS side: the repair buffer and dead letters
//! (DynamoDB), the bus (EventBridge) and the push feed (Lambda).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::domain::{FeedChange, OutboxEvent, UserId};
use crate::ports::{
    ChangeFeed, ChangePublisher, DeadLetter, DeadLetters, Delivery, FeedError, PendingRepair, PublishError,
    RepairBuffer, RepairError,
};

#[derive(Default)]
pub struct FakeRepair {
    pub recorded: Mutex<Vec<UserId>>,
    pub fail: AtomicBool,
}

impl RepairBuffer for FakeRepair {
    async fn record(&self, users: &[UserId]) -> Result<(), RepairError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(RepairError::new("down"));
        }
        self.recorded.lock().unwrap().extend_from_slice(users);
        Ok(())
    }

    async fn pending(&self, _shard: u32) -> Result<Vec<PendingRepair>, RepairError> {
        Ok(self.recorded.lock().unwrap().iter().map(|u| PendingRepair { user: *u, marker: "m".into() }).collect())
    }

    async fn clear(&self, _shard: u32, done: &[PendingRepair]) -> Result<(), RepairError> {
        self.recorded.lock().unwrap().retain(|u| !done.iter().any(|d| d.user == *u));
        Ok(())
    }

    async fn forget(&self, user: UserId) -> Result<(), RepairError> {
        self.recorded.lock().unwrap().retain(|u| *u != user);
        Ok(())
    }
}

#[derive(Default)]
pub struct FakePublisher {
    pub published: Mutex<Vec<OutboxEvent>>,
    pub fail: AtomicBool,
    /// Gives every event up as too large for any bus call.
    pub too_large: AtomicBool,
}

impl FakePublisher {
    /// `(from, to)` of every `status_changed` published, in order.
    pub fn transitions(&self) -> Vec<(String, String)> {
        self.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
                (d["from"].as_str().unwrap().to_owned(), d["to"].as_str().unwrap().to_owned())
            })
            .collect()
    }
}

impl ChangePublisher for FakePublisher {
    fn enabled(&self) -> bool {
        true
    }

    async fn publish(&self, events: &[OutboxEvent]) -> Delivery {
        if self.fail.load(Ordering::SeqCst) {
            return Delivery { error: Some(PublishError::new("down")), ..Delivery::default() };
        }
        if self.too_large.load(Ordering::SeqCst) {
            return Delivery { dropped: (0..events.len()).collect(), ..Delivery::default() };
        }
        self.published.lock().unwrap().extend_from_slice(events);
        Delivery { accepted: (0..events.len()).collect(), ..Delivery::default() }
    }
}

/// Dead letters nobody reads.
#[derive(Default)]
pub struct FakeDeadLetters;

impl DeadLetters for FakeDeadLetters {
    async fn put(&self, _letters: &[DeadLetter]) -> Result<(), RepairError> {
        Ok(())
    }

    async fn forget(&self, _user: UserId) -> Result<(), RepairError> {
        Ok(())
    }
}

/// The push feed, in memory: every call's changes, in order.
#[derive(Default)]
pub struct FakeFeed {
    pub calls: Mutex<Vec<Vec<FeedChange>>>,
    /// Refuses every call for a reason that may pass (throttling).
    pub fail: AtomicBool,
    /// Refuses every call for good (no such function).
    pub missing: AtomicBool,
}

impl FakeFeed {
    /// Every change fed so far, in order, as `(user, version)`.
    pub fn fed(&self) -> Vec<(u64, u64)> {
        self.calls.lock().unwrap().iter().flatten().map(|c| (c.user_id.get(), c.version)).collect()
    }
}

impl ChangeFeed for FakeFeed {
    fn enabled(&self) -> bool {
        true
    }

    async fn changed(&self, changes: &[FeedChange]) -> Result<(), FeedError> {
        if self.missing.load(Ordering::SeqCst) {
            return Err(FeedError::permanent("no such function", None));
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(FeedError::transient("throttled", None));
        }
        self.calls.lock().unwrap().push(changes.to_vec());
        Ok(())
    }
}
