//! The authorizer's answer to API Gateway: an IAM policy for the connect's
//! `methodArn` and, when allowed, the context `StatusStreamFunction` reads
//! at `requestContext.authorizer` (DESIGN §12).

use serde::Serialize;
use status_shared::domain::UserId;

/// The principal named by a Deny for a token whose `sub` is no user id.
pub const INVALID_SUBJECT_PRINCIPAL: &str = "invalid-subject";

/// `{"principalId": …, "policyDocument": {…}, "context": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerResponse {
    /// The user id in decimal, or [`INVALID_SUBJECT_PRINCIPAL`].
    pub principal_id: String,
    pub policy_document: PolicyDocument,
    /// Present on Allow only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<AuthContext>,
}

/// An IAM policy document with one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDocument {
    /// Always `2012-10-17`.
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

/// `execute-api:Invoke` on one resource, allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    #[serde(rename = "Action")]
    pub action: &'static str,
    /// `Allow` or `Deny`.
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    /// The event's `methodArn`.
    #[serde(rename = "Resource")]
    pub resource: String,
}

/// What the stream function learns of the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthContext {
    /// The token's `sub`, a user id (`1..=2^63-1`) in canonical decimal.
    pub user_id: String,
}

impl AuthorizerResponse {
    /// Allows `user` to invoke `method_arn`, naming the user in
    /// `principalId` and `context.user_id`.
    pub fn allow(user: UserId, method_arn: &str) -> Self {
        let id = user.to_string();
        Self {
            principal_id: id.clone(),
            policy_document: PolicyDocument::single("Allow", method_arn),
            context: Some(AuthContext { user_id: id }),
        }
    }

    /// Denies `method_arn` (API Gateway answers 403) for a genuine token
    /// whose `sub` is no user id.
    pub fn deny(method_arn: &str) -> Self {
        Self {
            principal_id: INVALID_SUBJECT_PRINCIPAL.to_owned(),
            policy_document: PolicyDocument::single("Deny", method_arn),
            context: None,
        }
    }

    /// Whether this answer allows the connect.
    pub fn allows(&self) -> bool {
        self.policy_document.statement.iter().all(|s| s.effect == "Allow")
    }
}

impl PolicyDocument {
    fn single(effect: &'static str, resource: &str) -> Self {
        Self {
            version: "2012-10-17",
            statement: vec![Statement { action: "execute-api:Invoke", effect, resource: resource.to_owned() }],
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/$connect";

    #[test]
    fn allow_names_the_user_as_principal_and_in_the_context() {
        let allow = AuthorizerResponse::allow(UserId::new(42).unwrap(), ARN);
        assert!(allow.allows());
        assert_eq!(
            serde_json::to_value(&allow).unwrap(),
            json!({"principalId": "42", "policyDocument": {"Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ARN}]},
                "context": {"user_id": "42"}})
        );
    }

    #[test]
    fn deny_has_no_context() {
        let deny = AuthorizerResponse::deny(ARN);
        assert!(!deny.allows());
        let value = serde_json::to_value(&deny).unwrap();
        assert_eq!(value["policyDocument"]["Statement"][0]["Effect"], "Deny");
        assert_eq!(value["principalId"], INVALID_SUBJECT_PRINCIPAL);
        assert!(value.get("context").is_none());
    }
}
