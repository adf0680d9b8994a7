# Sourced by the scripts that talk to the AWS emulator. The AWS SDK honours
# AWS_ENDPOINT_URL, so DynamoDB and EventBridge go to moto; moto accepts any
# credentials, and the SDK refuses to sign without some. Values already set
# in the environment win.
export AWS_ENDPOINT_URL="${AWS_ENDPOINT_URL:-http://127.0.0.1:${MOTO_PORT:-5000}}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
# The AWS CLI v1 (the one pip installs) reads only this name for the region.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
