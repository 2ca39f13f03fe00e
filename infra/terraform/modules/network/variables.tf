variable "project_id" {
  type        = string
  description = "GCP project that owns the network."
}

variable "region" {
  type        = string
  description = "Region of the subnet, the router and the NAT gateway (same as the cluster's)."
}

variable "name" {
  type        = string
  description = "Name prefix of every network resource."
}

variable "subnet_cidr" {
  type        = string
  description = "Primary IPv4 range of the subnet; the nodes take their addresses from it."
  default     = "10.10.0.0/20"
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for pod IPs (VPC-native cluster); a /14 allows about 1000 nodes at 110 pods each."
  default     = "10.16.0.0/14"
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for ClusterIP Services."
  default     = "10.20.0.0/20"
}
