// iree_glm tuning spec (transform dialect) for llvm-cpu: wider workgroup tiles for the
// data-tiled f32 matmuls (linalg.mmt4d) of prefill. IREE's default distributes each mmt4d in
// workgroups of a few inner tiles; this spec asks for 8 x 8 inner tiles per workgroup, so each
// weight tile a workgroup loads serves more tokens. Not a clear win on every shape, hence
// opt-in: a profile's flags name it as "@tuning-spec:cpu_mmt4d_wide".
//
// The vector tile must equal the target's mmt4d inner tile (8x8 with AVX2 or NEON, 16x16 with
// AVX-512); a lowering_config that disagrees with it computes wrong results silently. So each
// match names the inner tile it was written for, and an mmt4d of any other tile shape (SSE's
// 8x4, say) keeps IREE's own configuration.
module attributes {transform.with_named_sequence, iree_codegen.tuning_spec_with_default_entrypoint} {
  transform.named_sequence @apply_op_config(%op: !transform.any_op {transform.readonly}, %config: !transform.any_param {transform.readonly}) {
    transform.annotate %op "lowering_config" = %config : !transform.any_op, !transform.any_param
    %func = transform.get_parent_op %op <{op_name = "func.func"}> : (!transform.any_op) -> !transform.any_op
    %info = transform.param.constant #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<Mmt4dTilingExpert>> -> !transform.any_param
    transform.annotate %func "translation_info" = %info : !transform.any_op, !transform.any_param
    transform.yield
  }
  transform.named_sequence @match_f32_mmt4d_8x8(%op: !transform.any_op {transform.readonly}) -> (!transform.any_op, !transform.any_param) {
    transform.match.operation_name %op ["linalg.mmt4d"] : !transform.any_op
    %lhs = transform.get_operand %op[0] : (!transform.any_op) -> !transform.any_value
    %rhs = transform.get_operand %op[1] : (!transform.any_op) -> !transform.any_value
    transform.iree.match.cast_compatible_type %lhs = tensor<?x?x8x1xf32> : !transform.any_value
    transform.iree.match.cast_compatible_type %rhs = tensor<?x?x8x1xf32> : !transform.any_value
    %config = transform.param.constant #iree_cpu.lowering_config<distribution = [8, 8, 0, 0, 0, 0], vector_common_parallel = [1, 1, 0, 8, 8, 0], vector_reduction = [0, 0, 1, 0, 0, 1]> -> !transform.any_param
    transform.yield %op, %config : !transform.any_op, !transform.any_param
  }
  transform.named_sequence @match_f32_mmt4d_16x16(%op: !transform.any_op {transform.readonly}) -> (!transform.any_op, !transform.any_param) {
    transform.match.operation_name %op ["linalg.mmt4d"] : !transform.any_op
    %lhs = transform.get_operand %op[0] : (!transform.any_op) -> !transform.any_value
    %rhs = transform.get_operand %op[1] : (!transform.any_op) -> !transform.any_value
    transform.iree.match.cast_compatible_type %lhs = tensor<?x?x16x1xf32> : !transform.any_value
    transform.iree.match.cast_compatible_type %rhs = tensor<?x?x16x1xf32> : !transform.any_value
    %config = transform.param.constant #iree_cpu.lowering_config<distribution = [8, 8, 0, 0, 0, 0], vector_common_parallel = [1, 1, 0, 16, 16, 0], vector_reduction = [0, 0, 1, 0, 0, 1]> -> !transform.any_param
    transform.yield %op, %config : !transform.any_op, !transform.any_param
  }
  transform.named_sequence @__kernel_config(%variant_op: !transform.any_op {transform.consumed}) -> !transform.any_op attributes {iree_codegen.tuning_spec_entrypoint} {
    %res = transform.foreach_match in %variant_op
        @match_f32_mmt4d_8x8 -> @apply_op_config,
        @match_f32_mmt4d_16x16 -> @apply_op_config
      : (!transform.any_op) -> !transform.any_op
    transform.yield %res : !transform.any_op
  }
}
