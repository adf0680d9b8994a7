//! Creates locally what the SAM template and the deploy pipeline own in
//! AWS: the database and its schema, the two DynamoDB tables and the event
//! bus. Every step is idempotent, so starting twice (or beside a test that
//! made the same names) changes nothing.

use std::str::FromStr;

use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::QueueAttributeName;
use sqlx::migrate::MigrateDatabase;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPoolOptions};
use status_shared::adapters::eventbridge::SOURCE;
use status_shared::adapters::mysql::MIGRATOR;

use crate::provision::{create_bus, create_tables};
use crate::settings::Settings;

/// Why the local resources could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("DATABASE_URL is invalid")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("DATABASE_URL names no database; add one, e.g. mysql://root@127.0.0.1:3306/online_status")]
    NoDatabaseName,
    #[error("could not create database `{database}` (is MariaDB running? scripts/services.sh starts it)")]
    CreateDatabase {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed on database `{database}`")]
    Migrate {
        database: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("the AWS SDK found no region; export AWS_REGION=us-east-1 (scripts/up.sh does), the emulator accepts any")]
    NoRegion,
    #[error(transparent)]
    Aws(#[from] status_shared::adapters::aws::SetupError),
    #[error("{step} failed: {message}")]
    EventsQueue { step: String, message: String },
}

/// What setup made that people may want to know about.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// The URL of the queue receiving `status_changed` events, when
    /// `LOCAL_EVENTS_QUEUE` asked for one.
    pub events_queue_url: Option<String>,
}

/// Makes every resource the functions expect exist: the database named in
/// `DATABASE_URL` with the migrations applied, the repair and dead-letter
/// tables, the bus and, when asked for, the event queue.
pub async fn prepare(settings: &Settings, sdk: &SdkConfig) -> Result<Prepared, SetupError> {
    let config = &settings.config;
    if sdk.region().is_none() {
        return Err(SetupError::NoRegion);
    }
    migrate(&config.database_url).await?;

    let repair = config.repair_table.as_deref().ok_or(SetupError::Missing("REPAIR_TABLE"))?;
    let dead_letters = config.dead_letter_table.as_deref().ok_or(SetupError::Missing("DEAD_LETTER_TABLE"))?;
    create_tables(&aws_sdk_dynamodb::Client::new(sdk), repair, dead_letters).await?;

    let mut prepared = Prepared::default();
    if let Some(bus) = &config.status_event_bus {
        let events = aws_sdk_eventbridge::Client::new(sdk);
        create_bus(&events, bus).await?;
        if let Some(queue) = &settings.events_queue {
            prepared.events_queue_url =
                Some(forward_to_queue(&events, &aws_sdk_sqs::Client::new(sdk), bus, queue).await?);
        }
    }
    Ok(prepared)
}

/// Creates the database if absent, then applies the migrations.
pub async fn migrate(database_url: &str) -> Result<(), SetupError> {
    let options = MySqlConnectOptions::from_str(database_url).map_err(SetupError::DatabaseUrl)?;
    let database = options.get_database().ok_or(SetupError::NoDatabaseName)?.to_owned();
    let create_error = |source| SetupError::CreateDatabase { database: database.clone(), source };

    if !MySql::database_exists(database_url).await.map_err(create_error)? {
        MySql::create_database(database_url).await.map_err(create_error)?;
    }

    // One connection: migrations run one statement after another anyway.
    let pool = MySqlPoolOptions::new().max_connections(1).connect_with(options).await.map_err(create_error)?;
    let migrated = MIGRATOR.run(&pool).await;
    pool.close().await;
    migrated.map_err(|source| SetupError::Migrate { database, source })
}

/// Points a rule on `bus` at the SQS queue `queue` (both created if absent)
/// so every `status_changed` event can be read back with
/// `aws sqs receive-message`. Returns the queue URL.
async fn forward_to_queue(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    bus: &str,
    queue: &str,
) -> Result<String, SetupError> {
    let missing =
        |step: String, what: &str| SetupError::EventsQueue { step, message: format!("no {what} in the answer") };
    // CreateQueue with the same name and attributes answers the existing
    // queue, which is what makes this idempotent.
    let created =
        sqs.create_queue().queue_name(queue).send().await.map_err(sdk_error(format!("CreateQueue {queue}")))?;
    let queue_url = created.queue_url().ok_or_else(|| missing(format!("CreateQueue {queue}"), "QueueUrl"))?.to_owned();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(sdk_error(format!("GetQueueAttributes {queue}")))?;
    let queue_arn = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| missing(format!("GetQueueAttributes {queue}"), "QueueArn"))?;

    let rule = format!("online-status-local-to-{queue}");
    // PutRule and PutTargets overwrite what is there: idempotent too. The
    // emulator needs no queue policy letting EventBridge send; AWS would.
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(bus)
        .event_pattern(serde_json::json!({ "source": [SOURCE] }).to_string())
        .send()
        .await
        .map_err(sdk_error(format!("PutRule {rule}")))?;
    let target = Target::builder()
        .id("local-events-queue")
        .arn(queue_arn)
        .build()
        .map_err(sdk_error(format!("PutTargets {rule}")))?;
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(bus)
        .targets(target)
        .send()
        .await
        .map_err(sdk_error(format!("PutTargets {rule}")))?;
    Ok(queue_url)
}

/// Maps an SDK failure of `step` to an error with the SDK's full text
/// (its own `Display` says only "service error").
fn sdk_error<E: std::error::Error>(step: String) -> impl FnOnce(E) -> SetupError {
    move |error| SetupError::EventsQueue { step, message: aws_sdk_sqs::error::DisplayErrorContext(&error).to_string() }
}
