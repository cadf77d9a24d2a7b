terraform {
  required_version = ">= 1.9"

  required_providers {
    vault = {
      source = "hashicorp/vault"
      # 4.x and 5.x (the current majors) take every argument used here, `namespace` on each
      # resource included.
      version = ">= 4.0"
    }
  }
}
