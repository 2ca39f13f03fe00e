output "bucket_name" {
  description = "Name of the weights bucket."
  value       = google_storage_bucket.weights.name
}

output "bucket_url" {
  description = "gs:// URL of the weights bucket (target of the upload in docs/deploy.md)."
  value       = google_storage_bucket.weights.url
}
