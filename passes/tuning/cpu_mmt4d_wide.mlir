// iree_glm tuning spec (transform dialect) for llvm-cpu: wider workgroup tiles for the
// data-tiled matmuls (linalg.mmt4d) of prefill. IREE's default distributes each mmt4d in
// workgroups of 2 x 4 inner tiles (16 weight rows x 32 tokens with 8x8 tiles); this spec asks
// for 8 x 8 (64 x 64), so each weight tile a workgroup loads serves 64 tokens instead of 32.
// Measured (2 threads, load 9-10, so only indicative): a single 1024 -> 5632 matmul at 512 rows
// 1.1-1.2x faster, at 128 and 256 rows unchanged; 2 layers of the 330M config, 512 tokens, 4
// interleaved rounds: whole prompt 0.94x, chunks of 256 1.26x: not a clear win, hence opt-in
// (it also changes decode's M=1 tiles): a profile's flags name it as "@tuning-spec:cpu_mmt4d_wide".
module attributes {transform.with_named_sequence, iree_codegen.tuning_spec_with_default_entrypoint} {
  transform.named_sequence @apply_op_config(%op: !transform.any_op {transform.readonly}, %config: !transform.any_param {transform.readonly}) {
    transform.annotate %op "lowering_config" = %config : !transform.any_op, !transform.any_param
    %func = transform.get_parent_op %op <{op_name = "func.func"}> : (!transform.any_op) -> !transform.any_op
    %info = transform.param.constant #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<Mmt4dTilingExpert>> -> !transform.any_param
    transform.annotate %func "translation_info" = %info : !transform.any_op, !transform.any_param
    transform.yield
  }
  transform.named_sequence @match_f32_mmt4d(%op: !transform.any_op {transform.readonly}) -> (!transform.any_op, !transform.any_param) {
    transform.match.operation_name %op ["linalg.mmt4d"] : !transform.any_op
    %config = transform.param.constant #iree_cpu.lowering_config<distribution = [8, 8, 0, 0, 0, 0], vector_common_parallel = [1, 1, 0, 8, 8, 0], vector_reduction = [0, 0, 1, 0, 0, 1]> -> !transform.any_param
    transform.yield %op, %config : !transform.any_op, !transform.any_param
  }
  transform.named_sequence @__kernel_config(%variant_op: !transform.any_op {transform.consumed}) -> !transform.any_op attributes {iree_codegen.tuning_spec_entrypoint} {
    %res = transform.foreach_match in %variant_op
        @match_f32_mmt4d -> @apply_op_config
      : (!transform.any_op) -> !transform.any_op
    transform.yield %res : !transform.any_op
  }
}
