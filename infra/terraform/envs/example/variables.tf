variable "project_id" {
  type        = string
  description = "GCP project to deploy into."
}

variable "region" {
  type        = string
  description = "Region of the cluster, the network and the weights bucket."
  default     = "us-central1"
}

variable "name" {
  type        = string
  description = "Name of the environment; prefixes the cluster, the network and the edge address."
  default     = "minicpmv-example"
}

variable "master_authorized_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the Kubernetes API (your workstation or CI egress)."
}

variable "gpu_zones" {
  type        = list(string)
  description = "Zones of the region with capacity for gpu_type."
  default     = ["us-central1-a", "us-central1-b"]
}

variable "gpu_type" {
  type        = string
  description = "Accelerator type of the GPU pool (see docs/deploy.md, Sizing)."
  default     = "nvidia-l4"
}

variable "gpu_machine_type" {
  type        = string
  description = "Machine type of the GPU pool, matching gpu_type."
  default     = "g2-standard-16"
}

variable "gpu_max_nodes" {
  type        = number
  description = "Upper bound of GPU nodes per GPU zone."
  default     = 2
}

variable "gpu_replicas" {
  type        = number
  description = "gpu-service replicas at install time."
  default     = 1
}

variable "weights_bucket_name" {
  type        = string
  description = "Globally unique name of the weights bucket."
}

variable "hostname" {
  type        = string
  description = "Public DNS name of the API, inside dns_zone_name."
}

variable "dns_zone_name" {
  type        = string
  description = "Existing Cloud DNS managed zone for hostname."
}

variable "image_registry" {
  type        = string
  description = "Registry prefix where the three images were pushed."
}

variable "image_tag" {
  type        = string
  description = "Image tag to deploy."
}

variable "api_keys" {
  type        = list(string)
  description = "Bearer keys accepted by the edge; pass them via TF_VAR_api_keys, never in a committed file."
  sensitive   = true
}
