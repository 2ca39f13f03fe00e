# Example environment: one regional GKE cluster, a GPU pool that scales 0..gpu_max_nodes per zone,
# the weights bucket, the chart release and HTTPS on `hostname`.

locals {
  release_name = "minicpmv"
  namespace    = "minicpmv"
  chart_path   = "${path.root}/../../../helm/minicpmv"
}

module "network" {
  source = "../../modules/network"

  project_id = var.project_id
  region     = var.region
  name       = var.name
}

module "gke" {
  source = "../../modules/gke"

  project_id              = var.project_id
  region                  = var.region
  name                    = var.name
  network_id              = module.network.network_id
  subnet_id               = module.network.subnet_id
  pods_range_name         = module.network.pods_range_name
  services_range_name     = module.network.services_range_name
  master_authorized_cidrs = var.master_authorized_cidrs
  gpu_zones               = var.gpu_zones
  gpu_type                = var.gpu_type
  gpu_machine_type        = var.gpu_machine_type
  gpu_max_nodes           = var.gpu_max_nodes
}

module "weights" {
  source = "../../modules/weights-bucket"

  project_id = var.project_id
  name       = var.weights_bucket_name
  location   = var.region

  readers = [
    { namespace = local.namespace, service_account = "${local.release_name}-preprocess" },
    { namespace = local.namespace, service_account = "${local.release_name}-gpu-service" },
  ]
}

module "edge_dns_tls" {
  source = "../../modules/edge-dns-tls"

  project_id    = var.project_id
  name          = var.name
  hostname      = var.hostname
  dns_zone_name = var.dns_zone_name
}

module "serving" {
  source = "../../modules/serving"

  release_name      = local.release_name
  namespace         = local.namespace
  chart_path        = local.chart_path
  image_registry    = var.image_registry
  image_tag         = var.image_tag
  api_keys          = var.api_keys
  weights_bucket    = module.weights.bucket_name
  gpu_node_selector = module.gke.gpu_node_selector
  gpu_replicas      = var.gpu_replicas
  hostname          = var.hostname
  static_ip_name    = module.edge_dns_tls.ip_name
  certificate_name  = module.edge_dns_tls.certificate_name

  # The node pools must exist before pods are scheduled, and the bucket grant before the mount.
  depends_on = [module.gke, module.weights]
}
