output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.this.name
}

output "endpoint" {
  description = "HTTPS endpoint of the Kubernetes API."
  value       = "https://${google_container_cluster.this.endpoint}"
}

output "ca_certificate" {
  description = "PEM CA certificate of the Kubernetes API."
  value       = base64decode(google_container_cluster.this.master_auth[0].cluster_ca_certificate)
}

output "workload_pool" {
  description = "Workload Identity pool of the cluster (PROJECT.svc.id.goog)."
  value       = google_container_cluster.this.workload_identity_config[0].workload_pool
}

output "gpu_node_selector" {
  description = "Node labels that pin a pod to the GPU pool's accelerator type."
  value       = { "cloud.google.com/gke-accelerator" = var.gpu_type }
}
