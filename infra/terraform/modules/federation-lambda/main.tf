# The central federation as an AWS Lambda function (provided.al2023). The same `esi-federation`
# binary serves Lambda and Kubernetes: it picks Lambda mode from `AWS_LAMBDA_RUNTIME_API`. Its
# configuration (the esi.dev manifests) ships as a Lambda layer mounted at /opt/esi, so a
# configuration change publishes a new layer version without rebuilding the code package.

locals {
  build_dir   = coalesce(var.build_dir, "${path.root}/.esi-build")
  config_path = "/opt/esi"
  tags        = merge({ "app.kubernetes.io/part-of" = "esi", "esi.dev/component" = "federation" }, var.tags)
  issuer      = var.issuer_url != null
}

module "config" {
  source = "../federation-config"

  cluster_manifests = var.cluster_manifests
  secret_stores     = var.secret_stores
  generators        = var.generators
  authorizations    = var.authorizations
  extra_manifests   = var.extra_manifests
}

# ---------------------------------------------------------------------------------------------
# Configuration layer

data "archive_file" "config" {
  type        = "zip"
  output_path = "${local.build_dir}/${var.name}-config.zip"

  # Layers are extracted under /opt: these files land in /opt/esi/ (ESI_CONFIG).
  dynamic "source" {
    for_each = module.config.files
    content {
      filename = "esi/${source.key}"
      content  = source.value
    }
  }
}

resource "aws_lambda_layer_version" "config" {
  layer_name               = "${var.name}-config"
  description              = "esi federation configuration (sha256 ${module.config.sha256})"
  filename                 = data.archive_file.config.output_path
  source_code_hash         = data.archive_file.config.output_base64sha256
  compatible_runtimes      = ["provided.al2023"]
  compatible_architectures = [var.architecture]
}

# ---------------------------------------------------------------------------------------------
# Lease-sealing key. Leases are sealed (AEAD) so revocation needs no server-side state; every
# instance must hold the same key. It lives in Terraform state (keep the state encrypted) and in
# a Secrets Manager secret the function reads once per cold start (ESI_LEASE_KEYS_SECRET), not in
# the function's environment, which anyone allowed lambda:GetFunctionConfiguration reads in
# plain text.

resource "random_bytes" "lease_key" {
  length = 32
  keepers = {
    rotation = var.lease_key_rotation
  }
}

resource "aws_secretsmanager_secret" "lease_keys" {
  name        = "${var.name}-lease-keys"
  description = "esi federation ${var.name}: lease-sealing keys (id=base64 entries, the first seals)"
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "lease_keys" {
  secret_id = aws_secretsmanager_secret.lease_keys.id
  # `id=base64` entries, comma-separated; the first seals, all open.
  secret_string = join(",", concat(["k${var.lease_key_rotation}=${random_bytes.lease_key.base64}"], var.previous_lease_keys))
}

# ---------------------------------------------------------------------------------------------
# OIDC issuer signing keys (optional, with issuer_url): PEM text given by the operator, kept like
# the lease keys in a secret the function reads once per cold start (ESI_ISSUER_KEYS_SECRET,
# version pinned), never in its environment. Rotation is an edit of issuer_keys_pem (see its
# description): every change writes a new version and, through the pinned version, retires the
# instances that hold the old keys.

resource "aws_secretsmanager_secret" "issuer_keys" {
  count = local.issuer ? 1 : 0

  name        = "${var.name}-issuer-keys"
  description = "esi federation ${var.name}: OIDC issuer signing keys (PEM private keys, the first signs)"
  kms_key_id  = var.kms_key_arn
  tags        = local.tags
}

resource "aws_secretsmanager_secret_version" "issuer_keys" {
  count = local.issuer ? 1 : 0

  secret_id     = aws_secretsmanager_secret.issuer_keys[0].id
  secret_string = var.issuer_keys_pem
}

# ---------------------------------------------------------------------------------------------
# Logs

resource "aws_cloudwatch_log_group" "this" {
  name              = "/aws/lambda/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

# ---------------------------------------------------------------------------------------------
# IAM: write its own logs, read its lease keys (and issuer keys), assume the listed roles with session tags and
# source identity. Nothing else by default: backends other than AWS authenticate with their own
# credentials. AWS generators without `roleArn` (ECRAuthorizationToken, SecretsManagerSecret,
# SSMParameter, RDSAuthToken) call AWS, or sign, as this role; what they need is granted only
# when asked for, and only on what is named (ecr_authorization_token, ecr_pull_repository_arns,
# readable_secret_arns, secret_kms_key_arns, readable_parameter_arns, readable_parameter_paths,
# parameter_kms_key_arns, rds_connect_arns).

data "aws_iam_policy_document" "trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = "${var.name}-fn"
  description          = "esi federation function ${var.name}"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = 3600
  tags                 = local.tags
}

data "aws_iam_policy_document" "permissions" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  statement {
    sid       = "ReadLeaseKeys"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.lease_keys.arn]
  }

  dynamic "statement" {
    for_each = local.issuer ? [1] : []
    content {
      sid       = "ReadIssuerKeys"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = aws_secretsmanager_secret.issuer_keys[*].arn
    }
  }

  dynamic "statement" {
    for_each = length(var.assumable_role_arns) > 0 ? [1] : []
    content {
      sid = "AssumeGeneratorRoles"
      # TagSession carries the verified identity (cluster, namespace, service account, pod) as
      # session tags; SetSourceIdentity pins it for the whole role chain in CloudTrail.
      actions   = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
      resources = var.assumable_role_arns
    }
  }

  dynamic "statement" {
    for_each = var.ecr_authorization_token ? [1] : []
    content {
      sid = "EcrAuthorizationToken"
      # ECRAuthorizationToken without roleArn. GetAuthorizationToken has no resource-level
      # permission: IAM accepts only "*". The token it returns is a registry login that carries
      # this role's ECR permissions and nothing more, so what it can pull is decided by the
      # EcrPullImages statement below (or by repository policies naming this role).
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = length(var.ecr_pull_repository_arns) > 0 ? [1] : []
    content {
      sid = "EcrPullImages"
      # The image pull actions a registry client makes with the token, on the listed
      # repositories only. The function itself never pulls.
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = var.ecr_pull_repository_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.readable_secret_arns) > 0 ? [1] : []
    content {
      sid = "ReadGeneratorSecrets"
      # SecretsManagerSecret without roleArn. GetSecretValue alone reads a secret (any version
      # or stage); DescribeSecret is not needed. The validation of readable_secret_arns keeps
      # these patterns off the lease-keys secret.
      actions   = ["secretsmanager:GetSecretValue"]
      resources = var.readable_secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.secret_kms_key_arns) > 0 ? [1] : []
    content {
      # Secrets Manager decrypts a secret under a customer managed key with the caller's own
      # kms:Decrypt, through the service and with the secret's ARN as encryption context: the
      # keys decrypt only those secrets, and nothing called directly. ViaService names Secrets
      # Manager in each key's region rather than the function's: a secret and its key share a
      # region, and an `aws` store may name another region than the function's.
      sid       = "DecryptGeneratorSecrets"
      actions   = ["kms:Decrypt"]
      resources = var.secret_kms_key_arns
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = distinct([for arn in var.secret_kms_key_arns : "secretsmanager.${split(":", arn)[3]}.amazonaws.com"])
      }
      condition {
        test     = "StringLike"
        variable = "kms:EncryptionContext:SecretARN"
        values   = var.readable_secret_arns
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.readable_parameter_arns) > 0 ? [1] : []
    content {
      sid = "ReadGeneratorParameters"
      # SSMParameter without roleArn, by `name`. GetParameter alone reads a parameter (any
      # version or label, decrypted with WithDecryption); GetParameters is not needed, and
      # GetParametersByPath (`path`) is granted only by ReadGeneratorParameterPaths below, on
      # readable_parameter_paths: here it would open everything below each pattern. A name
      # under /aws/reference/ reads a Secrets Manager secret through Parameter Store with this
      # role's Secrets Manager permissions, which cover the lease-keys secret: the federation
      # refuses those names.
      actions   = ["ssm:GetParameter"]
      resources = var.readable_parameter_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.readable_parameter_paths) > 0 ? [1] : []
    content {
      sid = "ReadGeneratorParameterPaths"
      # SSMParameter without roleArn, by `path`. IAM authorizes GetParametersByPath on the
      # path's own ARN (parameter/apps/payments for /apps/payments), not on the parameters it
      # returns: each of these opens every parameter below it, at every depth (`recursive` is
      # the federation's request, not a limit IAM sets). The validation of
      # readable_parameter_paths refuses /aws/reference, which holds no parameters of the
      # account and is refused by the federation anyway.
      actions   = ["ssm:GetParametersByPath"]
      resources = var.readable_parameter_paths
    }
  }

  dynamic "statement" {
    for_each = length(var.parameter_kms_key_arns) > 0 && length(var.readable_parameter_arns) + length(var.readable_parameter_paths) > 0 ? [1] : []
    content {
      # Parameter Store decrypts a SecureString under a customer managed key with the caller's
      # own kms:Decrypt, through the service and with the parameter's ARN as encryption context
      # (PARAMETER_ARN): the keys decrypt only those parameters, and nothing called directly.
      # Decryption is per parameter, for GetParametersByPath too, each under its own ARN: a
      # path's parameters are `<path>/*`, what the condition adds for each path (never for the
      # patterns of readable_parameter_arns, which read one parameter each). ViaService names
      # Parameter Store in each key's region, as for the secrets above.
      sid       = "DecryptGeneratorParameters"
      actions   = ["kms:Decrypt"]
      resources = var.parameter_kms_key_arns
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = distinct([for arn in var.parameter_kms_key_arns : "ssm.${split(":", arn)[3]}.amazonaws.com"])
      }
      condition {
        test     = "StringLike"
        variable = "kms:EncryptionContext:PARAMETER_ARN"
        values   = distinct(concat(var.readable_parameter_arns, [for path in var.readable_parameter_paths : "${path}/*"]))
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.rds_connect_arns) > 0 ? [1] : []
    content {
      sid = "ConnectGeneratorDatabases"
      # RDSAuthToken without roleArn: the token the federation signs as this role logs in as
      # one of these database users; RDS checks rds-db:connect when the app connects.
      actions   = ["rds-db:connect"]
      resources = var.rds_connect_arns
    }
  }

  dynamic "statement" {
    for_each = var.tracing_mode == "Active" ? [1] : []
    content {
      sid     = "XRay"
      actions = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
      # X-Ray write actions do not support resource-level permissions.
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.vpc_config == null ? [] : [1]
    content {
      sid = "VpcNetworkInterfaces"
      # The ENI actions Lambda needs in a VPC (as AWSLambdaVPCAccessExecutionRole); EC2 does
      # not scope Describe* by resource.
      actions = [
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
      ]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [1]
    content {
      # The environment, and the lease-keys secret: Secrets Manager decrypts a secret under a
      # customer-managed key with the caller's own kms:Decrypt (through the service, with the
      # secret's ARN as encryption context). No kms:ViaService condition: the two uses come
      # through two services and one key.
      sid       = "DecryptWithKmsKey"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "esi-federation"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.permissions.json
}

# ---------------------------------------------------------------------------------------------
# The function

resource "aws_lambda_function" "this" {
  function_name                  = var.name
  description                    = "esi federation: ServiceAccount tokens in, disposable credentials out"
  role                           = aws_iam_role.this.arn
  runtime                        = "provided.al2023"
  handler                        = "bootstrap"
  architectures                  = [var.architecture]
  filename                       = var.package_path
  source_code_hash               = filebase64sha256(var.package_path)
  layers                         = [aws_lambda_layer_version.config.arn]
  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = var.kms_key_arn
  code_signing_config_arn        = var.code_signing_config_arn

  environment {
    variables = merge(var.environment, {
      ESI_CONFIG = local.config_path
      # The lease keys: read once per cold start, never placed in this environment.
      ESI_LEASE_KEYS_SECRET = aws_secretsmanager_secret.lease_keys.arn
      # Pinned rather than AWSCURRENT: a key change then changes this configuration, Lambda
      # retires every instance of the old one, and all instances seal and open with one ring.
      ESI_LEASE_KEYS_SECRET_VERSION = aws_secretsmanager_secret_version.lease_keys.version_id
      }, local.issuer ? {
      # The OIDC issuer: its URL, and its signing keys' secret and version, read like the
      # lease keys' (pinned for the same reason: every instance publishes the same JWKS).
      ESI_ISSUER_URL                 = var.issuer_url
      ESI_ISSUER_KEYS_SECRET         = one(aws_secretsmanager_secret.issuer_keys[*].arn)
      ESI_ISSUER_KEYS_SECRET_VERSION = one(aws_secretsmanager_secret_version.issuer_keys[*].version_id)
    } : {})
  }

  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.this.name
    application_log_level = var.log_level
    system_log_level      = "WARN"
  }

  tracing_config {
    mode = var.tracing_mode
  }

  dynamic "vpc_config" {
    for_each = var.vpc_config == null ? [] : [var.vpc_config]
    content {
      subnet_ids         = vpc_config.value.subnet_ids
      security_group_ids = vpc_config.value.security_group_ids
    }
  }

  tags = local.tags

  depends_on = [aws_iam_role_policy.this]
}

# ---------------------------------------------------------------------------------------------
# Endpoint: Function URL ...

resource "aws_lambda_function_url" "this" {
  count = var.endpoint_type == "function_url" ? 1 : 0

  function_name = aws_lambda_function.this.function_name
  # The federation authenticates every request itself (bearer ServiceAccount token verified
  # against the registered clusters' keys); IAM auth would demand AWS credentials from Pods in
  # clusters that have none. As an issuer, the discovery document and JWKS must be readable
  # without any credential too: relying parties fetch them anonymously. A function URL hands
  # every path to the function, so they need no route of their own (nor does the HTTP API's
  # `$default` route).
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

# Since October 2025 a public function URL needs both permissions.
resource "aws_lambda_permission" "url" {
  count = var.endpoint_type == "function_url" ? 1 : 0

  statement_id           = "FunctionUrlPublic"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.this.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_lambda_permission" "url_invoke" {
  count = var.endpoint_type == "function_url" ? 1 : 0

  statement_id             = "FunctionUrlInvoke"
  action                   = "lambda:InvokeFunction"
  function_name            = aws_lambda_function.this.function_name
  principal                = "*"
  invoked_via_function_url = true
}

# ... or API Gateway HTTP API (payload format 2.0, the same event shape as Function URLs).

resource "aws_cloudwatch_log_group" "api" {
  count = var.endpoint_type == "http_api" ? 1 : 0

  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_apigatewayv2_api" "this" {
  count = var.endpoint_type == "http_api" ? 1 : 0

  name          = var.name
  protocol_type = "HTTP"
  description   = "esi federation"
  tags          = local.tags
}

resource "aws_apigatewayv2_integration" "this" {
  count = var.endpoint_type == "http_api" ? 1 : 0

  api_id                 = aws_apigatewayv2_api.this[0].id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.this.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = var.timeout * 1000
}

resource "aws_apigatewayv2_route" "this" {
  count = var.endpoint_type == "http_api" ? 1 : 0

  api_id    = aws_apigatewayv2_api.this[0].id
  route_key = "$default"
  target    = "integrations/${aws_apigatewayv2_integration.this[0].id}"
  # No API Gateway authorizer: the federation verifies the bearer token itself.
  authorization_type = "NONE"
}

resource "aws_apigatewayv2_stage" "this" {
  count = var.endpoint_type == "http_api" ? 1 : 0

  api_id      = aws_apigatewayv2_api.this[0].id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_burst_limit = 200
    throttling_rate_limit  = 100
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api[0].arn
    format = jsonencode({
      requestId = "$context.requestId"
      ip        = "$context.identity.sourceIp"
      method    = "$context.httpMethod"
      path      = "$context.path"
      status    = "$context.status"
      latency   = "$context.responseLatency"
    })
  }

  tags = local.tags
}

resource "aws_lambda_permission" "api" {
  count = var.endpoint_type == "http_api" ? 1 : 0

  statement_id  = "HttpApiInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.this[0].execution_arn}/*/*"
}
