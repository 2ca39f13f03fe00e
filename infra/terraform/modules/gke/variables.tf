variable "project_id" {
  type        = string
  description = "GCP project of the cluster."
}

variable "region" {
  type        = string
  description = "Region of the (regional) cluster control plane and the CPU node pool."
}

variable "name" {
  type        = string
  description = "Cluster name; also the prefix of its node pools and node service account."
}

variable "network_id" {
  type        = string
  description = "VPC self link (network module output)."
}

variable "subnet_id" {
  type        = string
  description = "Node subnet self link (network module output)."
}

variable "pods_range_name" {
  type        = string
  description = "Secondary range name for pods (network module output)."
}

variable "services_range_name" {
  type        = string
  description = "Secondary range name for Services (network module output)."
}

variable "master_ipv4_cidr" {
  type        = string
  description = "A /28 for the control plane's private endpoint; must not overlap the VPC ranges."
  default     = "172.16.0.0/28"
}

variable "master_authorized_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the Kubernetes API (the operators' and CI's egress ranges)."
}

variable "release_channel" {
  type        = string
  description = "GKE release channel: RAPID, REGULAR or STABLE."
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to destroy the cluster from Terraform (turn off only to tear an environment down)."
  default     = true
}

variable "cpu_machine_type" {
  type        = string
  description = "Machine type of the CPU pool (edge, preprocess, system pods); preprocess wants 2+ vCPU per replica."
  default     = "e2-standard-8"
}

variable "cpu_min_nodes" {
  type        = number
  description = "Minimum CPU nodes per zone of the region."
  default     = 1
}

variable "cpu_max_nodes" {
  type        = number
  description = "Maximum CPU nodes per zone of the region."
  default     = 5
}

variable "gpu_zones" {
  type        = list(string)
  description = "Zones of the region that offer gpu_type; the GPU pool runs only there."
}

variable "gpu_machine_type" {
  type        = string
  description = "Machine type of the GPU pool, matching gpu_type (g2-standard-* for L4, a2-ultragpu-1g for A100 80GB, a3-highgpu-1g for H100)."
  default     = "g2-standard-16"
}

variable "gpu_type" {
  type        = string
  description = "Accelerator type attached to each GPU node, e.g. nvidia-l4, nvidia-a100-80gb, nvidia-h100-80gb."
  default     = "nvidia-l4"
}

variable "gpus_per_node" {
  type        = number
  description = "GPUs per GPU node; the chart runs one gpu-service replica per GPU."
  default     = 1
}

variable "gpu_min_nodes" {
  type        = number
  description = "Minimum GPU nodes per GPU zone (0 lets the autoscaler remove all of them when idle)."
  default     = 0
}

variable "gpu_max_nodes" {
  type        = number
  description = "Maximum GPU nodes per GPU zone; bounds spend and the number of gpu-service replicas."
  default     = 4
}

variable "gpu_spot" {
  type        = bool
  description = "Use Spot VMs for the GPU pool (cheaper, preemptible: the PDB cannot stop a preemption)."
  default     = false
}

variable "gpu_disk_size_gb" {
  type        = number
  description = "Boot disk of a GPU node; the CUDA runtime image alone is several GB."
  default     = 200
}
