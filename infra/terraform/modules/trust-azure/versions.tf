terraform {
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
