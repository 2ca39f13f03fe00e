provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_client_config" "current" {}

# The helm provider talks to the cluster this configuration creates, with the caller's token.
provider "helm" {
  kubernetes {
    host                   = module.gke.endpoint
    cluster_ca_certificate = module.gke.ca_certificate
    token                  = data.google_client_config.current.access_token
  }
}
