terraform {
  # 1.9: a validation block may refer to another variable (display_name_prefix checks the
  # credential names it makes with the keys of workloads).
  required_version = ">= 1.9"

  required_providers {
    azuread = {
      source = "hashicorp/azuread"
      # 3.0 removed `application_object_id` of azuread_application_federated_identity_credential:
      # the application is named by its resource ID, `application_id`.
      version = ">= 3.0"
    }
  }
}
