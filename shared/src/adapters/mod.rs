//! The only code that knows a driver: Redis, MySQL (sqlx), DynamoDB and
//! EventBridge.

pub mod aws;
pub mod codec;
pub mod dynamodb;
pub mod eventbridge;
pub mod mysql;
pub mod redis;
