// A marked attention whose block is not a constant: the pass cannot instantiate a kernel.
func.func @attention(%q: !torch.vtensor<[1,4,?,8],f32>, %k: !torch.vtensor<[1,2,96,8],f32>, %v: !torch.vtensor<[1,2,96,8],f32>, %pos: !torch.vtensor<[1,?],si64>, %block: !torch.int) -> !torch.vtensor<[1,4,?,8],f32> {
  %local = torch.constant.int 16
  %global = torch.constant.int 4
  %ring = torch.constant.int 0
  %0 = torch.operator "torch.iree_glm.block_sparse_attention"(%q, %k, %v, %pos, %local, %global, %block, %ring) : (!torch.vtensor<[1,4,?,8],f32>, !torch.vtensor<[1,2,96,8],f32>, !torch.vtensor<[1,2,96,8],f32>, !torch.vtensor<[1,?],si64>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,4,?,8],f32>
  return %0 : !torch.vtensor<[1,4,?,8],f32>
}
