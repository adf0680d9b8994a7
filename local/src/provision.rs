//! The AWS resources the SAM template owns in AWS, made in the emulator for
//! the local stack and the tests: the repair and dead-letter tables
//! (DESIGN §6, §3) and the event bus (§8). Every call is idempotent, so
//! starting twice, or beside a test that made the same names, changes
//! nothing. The functions never create anything.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use status_shared::adapters::aws::SetupError;

/// How long `create_tables` waits for a new table to become ACTIVE before
/// it can enable TTL on it.
const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(120);

/// Creates the repair and dead-letter tables if they do not exist, waits
/// for them to be ACTIVE, and turns TTL on for `expires_at`. Idempotent, so
/// the local stack and every test can call it on start.
pub async fn create_tables(
    client: &aws_sdk_dynamodb::Client,
    repair_table: &str,
    dead_letter_table: &str,
) -> Result<(), SetupError> {
    create_table(
        client,
        repair_table,
        &[("shard", ScalarAttributeType::N, KeyType::Hash), ("user_id", ScalarAttributeType::N, KeyType::Range)],
    )
    .await?;
    create_table(client, dead_letter_table, &[("id", ScalarAttributeType::S, KeyType::Hash)]).await
}

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: &[(&str, ScalarAttributeType, KeyType)],
) -> Result<(), SetupError> {
    let mut request = client.create_table().table_name(table).billing_mode(BillingMode::PayPerRequest);
    for (name, kind, role) in keys {
        let definition = AttributeDefinition::builder()
            .attribute_name(*name)
            .attribute_type(kind.clone())
            .build()
            .map_err(|e| SetupError::sdk(format!("CreateTable {table}"), e))?;
        let element = KeySchemaElement::builder()
            .attribute_name(*name)
            .key_type(role.clone())
            .build()
            .map_err(|e| SetupError::sdk(format!("CreateTable {table}"), e))?;
        request = request.attribute_definitions(definition).key_schema(element);
    }
    match request.send().await {
        Ok(_) => {}
        // It exists already (created by an earlier start, or by a test
        // running beside this one): that is the state this call wants.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(SetupError::sdk(format!("CreateTable {table}"), e)),
    }
    use aws_sdk_dynamodb::client::Waiters;
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(TABLE_ACTIVE_WAIT)
        .await
        .map_err(|e| SetupError::sdk(format!("waiting for table {table}"), e))?;
    enable_ttl(client, table).await
}

/// Turns TTL on for `expires_at` unless it is on (or turning on) already:
/// UpdateTimeToLive refuses to enable what is enabled.
async fn enable_ttl(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), SetupError> {
    let current = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| SetupError::sdk(format!("DescribeTimeToLive {table}"), e))?;
    let status = current.time_to_live_description().and_then(|d| d.time_to_live_status());
    if matches!(status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)) {
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name("expires_at")
        .build()
        .map_err(|e| SetupError::sdk(format!("UpdateTimeToLive {table}"), e))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| SetupError::sdk(format!("UpdateTimeToLive {table}"), e))?;
    Ok(())
}

/// Creates the bus `name` unless it exists. Idempotent, for the local stack
/// and tests; in AWS the SAM template owns the bus.
pub async fn create_bus(client: &aws_sdk_eventbridge::Client, name: &str) -> Result<(), SetupError> {
    // Every account has the default bus, and creating it is refused.
    if name == "default" {
        return Ok(());
    }
    match client.create_event_bus().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => Ok(()),
        Err(e) => Err(SetupError::sdk(format!("CreateEventBus {name}"), e)),
    }
}
