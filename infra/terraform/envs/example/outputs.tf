output "api_url" {
  description = "Base URL of the OpenAI-compatible API."
  value       = module.edge_dns_tls.url
}

output "edge_ip" {
  description = "Public IP of the edge load balancer (the A record points here)."
  value       = module.edge_dns_tls.ip_address
}

output "cluster_name" {
  description = "GKE cluster name, for gcloud container clusters get-credentials."
  value       = module.gke.cluster_name
}

output "weights_bucket_url" {
  description = "Where to upload the checkpoint directory (docs/deploy.md, Loading the real weights)."
  value       = module.weights.bucket_url
}
