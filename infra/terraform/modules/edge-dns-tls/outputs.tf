output "ip_address" {
  description = "The edge's public IPv4 address."
  value       = google_compute_global_address.edge.address
}

output "ip_name" {
  description = "Name of the global static IP (Ingress annotation kubernetes.io/ingress.global-static-ip-name)."
  value       = google_compute_global_address.edge.name
}

output "certificate_name" {
  description = "Name of the managed certificate (Ingress annotation ingress.gcp.kubernetes.io/pre-shared-cert)."
  value       = google_compute_managed_ssl_certificate.edge.name
}

output "url" {
  description = "Base URL of the OpenAI-compatible API."
  value       = "https://${var.hostname}/v1"
}
