# The AWS side of the federation's own login (`selfIssued` in an `aws` SecretStore): the
# federation signs a token for itself (`iss` = issuer_url, `sub` = `esi-federation`, `aud` =
# `sts.amazonaws.com`, five minutes) and calls AssumeRoleWithWebIdentity for this role. The
# trust policy names that subject and audience exactly, so no workload's `IdentityToken` (whose
# `sub` always names its cluster and ServiceAccount) can assume the role.

locals {
  # IAM's condition keys for web identity claims: the provider URL without `https://`.
  issuer_host_path  = trimprefix(var.issuer_url, "https://")
  oidc_provider_arn = var.oidc_provider_arn != null ? var.oidc_provider_arn : aws_iam_openid_connect_provider.this[0].arn
  tags              = merge({ "app.kubernetes.io/part-of" = "esi", "esi.dev/component" = "federation-trust" }, var.tags)
}

resource "aws_iam_openid_connect_provider" "this" {
  count = var.oidc_provider_arn == null ? 1 : 0

  url             = var.issuer_url
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = var.thumbprint_list
  tags            = local.tags
}

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "EsiFederationSelfIssued"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host_path}:sub"
      values   = ["esi-federation"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host_path}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.role_name
  path                 = var.role_path
  description          = "esi federation's own login (selfIssued) from ${var.issuer_url}"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = var.max_session_duration
  permissions_boundary = var.permissions_boundary_arn
  tags                 = local.tags
}

resource "aws_iam_role_policy_attachment" "this" {
  for_each = var.policy_arns

  role       = aws_iam_role.this.name
  policy_arn = each.value
}

resource "aws_iam_role_policy" "inline" {
  count = var.inline_policy_json == null ? 0 : 1

  name   = "${var.role_name}-inline"
  role   = aws_iam_role.this.id
  policy = var.inline_policy_json
}
