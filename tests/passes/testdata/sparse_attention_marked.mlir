// The model's attention as exported by iree_glm (one marked op): q [1,4,S,8] over a KV cache
// of 96 positions with 2 KV heads (GQA), window 16, 4 global tokens, query blocks of 8.
// Also a single-query (decode-shaped) instance with blocks of 1, and both over a sliding-window
// cache of 4 + 24 slots (ring).
func.func @prefill_attention(%q: !torch.vtensor<[1,4,?,8],f32>, %k: !torch.vtensor<[1,2,96,8],f32>, %v: !torch.vtensor<[1,2,96,8],f32>, %pos: !torch.vtensor<[1,?],si64>) -> !torch.vtensor<[1,4,?,8],f32> {
  %local = torch.constant.int 16
  %global = torch.constant.int 4
  %ring = torch.constant.int 0
  %block = torch.constant.int 8
  %0 = torch.operator "torch.iree_glm.block_sparse_attention"(%q, %k, %v, %pos, %local, %global, %block, %ring) : (!torch.vtensor<[1,4,?,8],f32>, !torch.vtensor<[1,2,96,8],f32>, !torch.vtensor<[1,2,96,8],f32>, !torch.vtensor<[1,?],si64>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,4,?,8],f32>
  return %0 : !torch.vtensor<[1,4,?,8],f32>
}

func.func @decode_attention(%q: !torch.vtensor<[1,4,1,8],f32>, %k: !torch.vtensor<[1,2,96,8],f32>, %v: !torch.vtensor<[1,2,96,8],f32>, %pos: !torch.vtensor<[1,1],si64>) -> !torch.vtensor<[1,4,1,8],f32> {
  %local = torch.constant.int 16
  %global = torch.constant.int 4
  %ring = torch.constant.int 0
  %block = torch.constant.int 1
  %0 = torch.operator "torch.iree_glm.block_sparse_attention"(%q, %k, %v, %pos, %local, %global, %block, %ring) : (!torch.vtensor<[1,4,1,8],f32>, !torch.vtensor<[1,2,96,8],f32>, !torch.vtensor<[1,2,96,8],f32>, !torch.vtensor<[1,1],si64>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,4,1,8],f32>
  return %0 : !torch.vtensor<[1,4,1,8],f32>
}

// Sliding-window cache: 4 globals + a ring of 24 slots (W + B); decode reads it with blocks of 1.
func.func @ring_decode_attention(%q: !torch.vtensor<[1,4,1,8],f32>, %k: !torch.vtensor<[1,2,28,8],f32>, %v: !torch.vtensor<[1,2,28,8],f32>, %pos: !torch.vtensor<[1,1],si64>) -> !torch.vtensor<[1,4,1,8],f32> {
  %local = torch.constant.int 16
  %global = torch.constant.int 4
  %block = torch.constant.int 1
  %ring = torch.constant.int 24
  %0 = torch.operator "torch.iree_glm.block_sparse_attention"(%q, %k, %v, %pos, %local, %global, %block, %ring) : (!torch.vtensor<[1,4,1,8],f32>, !torch.vtensor<[1,2,28,8],f32>, !torch.vtensor<[1,2,28,8],f32>, !torch.vtensor<[1,1],si64>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,4,1,8],f32>
  return %0 : !torch.vtensor<[1,4,1,8],f32>
}

// A prefill chunk (at most ring - W tokens, any start) over the same sliding-window cache.
func.func @ring_chunk_attention(%q: !torch.vtensor<[1,4,?,8],f32>, %k: !torch.vtensor<[1,2,28,8],f32>, %v: !torch.vtensor<[1,2,28,8],f32>, %pos: !torch.vtensor<[1,?],si64>) -> !torch.vtensor<[1,4,?,8],f32> {
  %local = torch.constant.int 16
  %global = torch.constant.int 4
  %block = torch.constant.int 8
  %ring = torch.constant.int 24
  %0 = torch.operator "torch.iree_glm.block_sparse_attention"(%q, %k, %v, %pos, %local, %global, %block, %ring) : (!torch.vtensor<[1,4,?,8],f32>, !torch.vtensor<[1,2,28,8],f32>, !torch.vtensor<[1,2,28,8],f32>, !torch.vtensor<[1,?],si64>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,4,?,8],f32>
  return %0 : !torch.vtensor<[1,4,?,8],f32>
}

// Attention over its own keys: k, v as long as q (possibly shorter than the G globals).
func.func @own_keys_attention(%q: !torch.vtensor<[1,4,?,8],f32>, %k: !torch.vtensor<[1,2,?,8],f32>, %v: !torch.vtensor<[1,2,?,8],f32>, %pos: !torch.vtensor<[1,?],si64>) -> !torch.vtensor<[1,4,?,8],f32> {
  %local = torch.constant.int 16
  %global = torch.constant.int 4
  %block = torch.constant.int 8
  %ring = torch.constant.int 0
  %0 = torch.operator "torch.iree_glm.block_sparse_attention"(%q, %k, %v, %pos, %local, %global, %block, %ring) : (!torch.vtensor<[1,4,?,8],f32>, !torch.vtensor<[1,2,?,8],f32>, !torch.vtensor<[1,2,?,8],f32>, !torch.vtensor<[1,?],si64>, !torch.int, !torch.int, !torch.int, !torch.int) -> !torch.vtensor<[1,4,?,8],f32>
  return %0 : !torch.vtensor<[1,4,?,8],f32>
}
