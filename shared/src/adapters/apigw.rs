//! Frames to WebSocket clients through API Gateway's Management API
//! (`PostToConnection`, DESIGN §12), at the endpoint `STREAM_ENDPOINT`
//! (locally, `http://127.0.0.1:3002`).

use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;

use crate::domain::stream::ConnectionId;
use crate::ports::{FramePoster, PostError, Posted};

/// Posts frames with the SDK client; `410 Gone` (`GoneException`) is
/// [`Posted::Gone`]. Without an endpoint configured every post fails.
#[derive(Clone, Debug)]
pub struct ApiGatewayPoster {
    client: Option<Client>,
}

impl ApiGatewayPoster {
    /// A poster for the management API at `endpoint` (the WebSocket API's
    /// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`), with
    /// the credentials, region and deadlines of `sdk`; `None`: none
    /// configured.
    pub fn new(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> Self {
        let client = endpoint.map(|url| {
            let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk).endpoint_url(url).build();
            Client::from_conf(config)
        });
        Self { client }
    }

    /// A poster with no endpoint: every post fails (for stacks that serve
    /// no WebSocket API).
    pub fn disabled() -> Self {
        Self { client: None }
    }
}

impl FramePoster for ApiGatewayPoster {
    async fn post(&self, connection: &ConnectionId, frame: &str) -> Result<Posted, PostError> {
        let Some(client) = &self.client else {
            return Err(PostError::new("STREAM_ENDPOINT is not set"));
        };
        let sent = client
            .post_to_connection()
            .connection_id(connection.as_str())
            .data(Blob::new(frame.as_bytes().to_vec()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Posted::Sent),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_gone_exception()) => Ok(Posted::Gone),
            Err(error) => Err(PostError::caused_by(format!("PostToConnection to {connection}"), error)),
        }
    }
}
