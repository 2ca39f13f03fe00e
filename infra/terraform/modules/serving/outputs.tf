output "namespace" {
  description = "Namespace of the release."
  value       = helm_release.minicpmv.namespace
}

output "edge_service" {
  description = "In-cluster name of the edge Service (for port-forwarding and smoke tests)."
  value       = "${var.release_name}-edge.${var.namespace}.svc.cluster.local"
}

output "service_accounts" {
  description = "Kubernetes ServiceAccounts of the pods that read the weights bucket."
  value       = ["${var.release_name}-preprocess", "${var.release_name}-gpu-service"]
}
