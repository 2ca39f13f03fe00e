# Remote state in a GCS bucket, configured at init time so each environment (and CI) can point
# it elsewhere without editing code:
#   terraform init -backend-config=backend.hcl      (see backend.hcl.example)
terraform {
  backend "gcs" {}
}
