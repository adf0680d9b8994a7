//! The only code that knows a driver: Redis, MySQL (sqlx), DynamoDB and
//! EventBridge.

pub mod codec;
pub mod mysql;
pub mod redis;
