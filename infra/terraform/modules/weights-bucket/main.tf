# The weights bucket: private, uniform access, versioned. Pods read it through the GCS FUSE CSI
# driver as their Kubernetes ServiceAccount (Workload Identity, no keys); nothing is baked into
# images.

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_storage_bucket" "weights" {
  project                     = var.project_id
  name                        = var.name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy

  versioning {
    enabled = true
  }

  # Old generations of replaced weight files go after 30 days.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }

    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "readers" {
  for_each = { for r in var.readers : "${r.namespace}/${r.service_account}" => r }

  bucket = google_storage_bucket.weights.name
  role   = "roles/storage.objectViewer"
  member = "principal://iam.googleapis.com/projects/${data.google_project.this.number}/locations/global/workloadIdentityPools/${var.project_id}.svc.id.goog/subject/ns/${each.value.namespace}/sa/${each.value.service_account}"
}
