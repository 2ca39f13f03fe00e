# DNS and TLS in front of the edge: a global static IP for the GKE Ingress (external HTTPS load
# balancer), an A record for it, and a Google-managed certificate that the Ingress presents.

resource "google_compute_global_address" "edge" {
  project = var.project_id
  name    = "${var.name}-edge"
}

resource "google_dns_record_set" "edge" {
  project      = var.project_id
  managed_zone = var.dns_zone_name
  name         = "${var.hostname}."
  type         = "A"
  ttl          = var.dns_ttl
  rrdatas      = [google_compute_global_address.edge.address]
}

resource "google_compute_managed_ssl_certificate" "edge" {
  project = var.project_id
  name    = "${var.name}-edge"

  managed {
    domains = [var.hostname]
  }
}
