//! The only code that knows a driver: Redis, MySQL (sqlx), DynamoDB,
//! EventBridge and Lambda.

pub mod apigw;
pub mod aws;
pub mod codec;
pub mod dynamodb;
pub mod eventbridge;
pub mod lambda;
pub mod mysql;
pub mod redis;

/// The MySQL driver's errors as the store port's: kept whole as the cause,
/// so the services above never name `sqlx`.
impl From<sqlx::Error> for crate::ports::StoreError {
    fn from(error: sqlx::Error) -> Self {
        crate::ports::StoreError::Database(Box::new(error))
    }
}
